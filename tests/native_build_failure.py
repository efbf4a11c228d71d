"""Shared by the native-kernel tests: make a ``native_build.NativeLibrary`` fail its next build."""

from __future__ import annotations


def break_the_build(monkeypatch, tmp_path, native) -> None:
    """``native`` (a NativeLibrary) as if never built, its next build without a compiler, in an empty cache folder,
    and the native path not disabled by the environment; monkeypatch restores all of it after the test."""
    monkeypatch.setattr(native, "_lib", None)
    monkeypatch.setattr(native, "_tried", False)
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path / "ext"))
    monkeypatch.setenv("CXX", str(tmp_path / "no-such-compiler"))
    monkeypatch.delenv("DISTILL3D_NATIVE", raising=False)
