"""Former home of the fields, torso, occupancy grid and volume renderer, now split (issue 12):

* :mod:`pipeline.models.fields`: ``mlp``, ``FieldOutput``, ``HeadField`` (shared field parts)
* :mod:`pipeline.models.methods.rad_nerf`: ``RadNeRFField`` (+ ``RadNeRFConfig``)
* :mod:`pipeline.models.methods.er_nerf`: ``ERNeRFField`` (+ ``ERNeRFConfig``)
* :mod:`pipeline.models.torso`: ``freq_encode``, ``TorsoField``
* :mod:`pipeline.models.occupancy`: ``OccupancyGrid``
* :mod:`pipeline.models.volume`: ``get_rays``, ``aabb_near_far``, ``render_rays``

The names are re-exported here so older imports keep working; new code imports the modules above.
"""
from __future__ import annotations

from pipeline.models.fields import FieldOutput, HeadField, mlp
from pipeline.models.methods.er_nerf import ERNeRFField
from pipeline.models.methods.rad_nerf import RadNeRFField
from pipeline.models.occupancy import OccupancyGrid
from pipeline.models.torso import TorsoField, freq_encode
from pipeline.models.volume import aabb_near_far, get_rays, render_rays

__all__ = ["FieldOutput", "HeadField", "mlp", "ERNeRFField", "RadNeRFField", "OccupancyGrid", "TorsoField",
           "freq_encode", "aabb_near_far", "get_rays", "render_rays"]
