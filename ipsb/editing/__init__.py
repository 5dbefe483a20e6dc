"""Attribute editing: the StyleIPSB basis and its baselines behind one interface, and ``ipsb edit``.

* :mod:`~ipsb.editing.directions`: :class:`DirectionSet`, named unit directions in W+;
* :mod:`~ipsb.editing.baselines`: InterfaceGAN, SeFa, GANSpace as direction sets;
* :mod:`~ipsb.editing.attributes`: named attributes (yaw, smile, light_x, ...) read from 3DMM coefficients;
* :mod:`~ipsb.editing.measure`: which direction edits which attribute, measured with the regressor;
* :mod:`~ipsb.editing.search`: the step that gives a requested attribute change (bisection);
* :mod:`~ipsb.editing.editor`, :mod:`~ipsb.editing.grid`, :mod:`~ipsb.editing.cli`: the ``ipsb edit`` command.
"""
from ipsb.editing.attributes import Attribute, attribute_table, get_attribute
from ipsb.editing.directions import DirectionSet

__all__ = ["Attribute", "DirectionSet", "attribute_table", "get_attribute"]
