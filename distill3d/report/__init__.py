"""Reports people look at, offline: ``html`` (comparison report: turntables, views, metrics tables), ``gallery``
(batch gallery), ``sweep`` (guidance-sweep figures), ``table`` (metric columns and formatting).

Import the modules by name; this file imports nothing (see distill3d/fields/__init__.py)."""
