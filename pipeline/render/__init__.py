"""Rendering: self-driven and cross-driven test protocols of trained talking-head NeRFs.

``python -m pipeline.render`` renders one (method, identity, test) into the render contract
(:mod:`pipeline.render.contract`); ``python -m pipeline.render.benchmark`` measures render FPS.
"""
