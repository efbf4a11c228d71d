"""Neural fields: hash-grid encoding and the density + albedo radiance field."""

from distill3d.fields.encoding import HashGridConfig, HashGridEncoding
from distill3d.fields.nerf import FieldConfig, FieldOutput, RadianceField

__all__ = ["HashGridConfig", "HashGridEncoding", "FieldConfig", "FieldOutput", "RadianceField"]
