"""The built-in breast phantom: procedural mammograms and masses, the default dataset.

``render_breast`` draws a full-field normal mammogram (CC/MLO, L/R, density A-D);
``render_mass`` blends a BI-RADS mass (4 shapes x 5 margins) into it with an exact mask;
``render_cluster_window`` draws a calcification cluster (13 morphologies x 5 distributions)
with exact calcification centres; ``draw_markers`` adds radio-opaque laterality/view letters
and a nipple bead (labelled category "marker", never lesions); ``phantom_lesion_records`` / ``phantom_calcification_records``
/ ``phantom_normal_records`` stream records for the store, and
``write_phantom_store`` writes the whole dataset file. See docs/phantom.md.
"""

from mammosynth.phantom.breast import (
    DENSITIES,
    PHANTOM_VERSION,
    VIEWS,
    PhantomBreast,
    default_spacing,
    power_law_noise,
    power_spectrum_slope,
    render_breast,
)
from mammosynth.phantom.calcification import render_cluster_window
from mammosynth.phantom.dataset import (
    malignancy_probability,
    phantom_calcification_records,
    phantom_lesion_records,
    phantom_normal_records,
    write_phantom_store,
)
from mammosynth.phantom.lesion import mass_contour, render_mass
from mammosynth.phantom.markers import draw_markers

__all__ = [
    "DENSITIES",
    "PHANTOM_VERSION",
    "VIEWS",
    "PhantomBreast",
    "default_spacing",
    "draw_markers",
    "malignancy_probability",
    "mass_contour",
    "phantom_calcification_records",
    "phantom_lesion_records",
    "phantom_normal_records",
    "power_law_noise",
    "power_spectrum_slope",
    "render_breast",
    "render_cluster_window",
    "render_mass",
    "write_phantom_store",
]
