"""Baseline model-inversion defenses, as losses and modules a training loop can use.

The defenses the MIDRE and CALoR papers compare against, each with its
published default and the one knob that sets its strength:

=========  =====================================================  ====================  =========
name       what                                                   knob                  default
=========  =====================================================  ====================  =========
``nls``    negative label smoothing after a cross-entropy warm-up  ``smoothing``          -0.05
           (Struppek et al., ICLR 2024)
``mid``    variational information bottleneck before the head     ``beta``               0.01
           (MID, Wang et al., AAAI 2021)
``bido``   bilateral dependency optimisation with HSIC            ``hsic_x``, ``hsic_y``  0.05, 0.5
           (BiDO, Peng et al., KDD 2022)
``tl``     fine-tune only the last part of a pre-trained network  ``freeze``             0.5
           (TL-DMI, Ho et al., CVPR 2024)
=========  =====================================================  ====================  =========

The training recipes that use them are registered in
:mod:`midefend.training.recipes`; ``docs/defenses.md`` gives the sources.
"""

from __future__ import annotations

from .bido import HSICPenalty as HSICPenalty
from .bido import gaussian_kernel as gaussian_kernel
from .bido import hsic as hsic
from .bido import hsic_normalized as hsic_normalized
from .mid import VariationalBottleneckHead as VariationalBottleneckHead
from .mid import gaussian_kl as gaussian_kl
from .nls import NegativeLabelSmoothingLoss as NegativeLabelSmoothingLoss
from .nls import smoothing_schedule as smoothing_schedule
from .nls import smoothed_targets as smoothed_targets
from .tl import freeze_leading as freeze_leading

__all__ = [
    "HSICPenalty",
    "NegativeLabelSmoothingLoss",
    "VariationalBottleneckHead",
    "freeze_leading",
    "gaussian_kernel",
    "gaussian_kl",
    "hsic",
    "hsic_normalized",
    "smoothed_targets",
    "smoothing_schedule",
]
