"""midefend.attacks: model-inversion attacks (PPA, GMI, MI-Face, PLG-MI, NES, BREP-MI, IF-GMI), their losses and generator priors.

>>> from midefend.attacks import list_attacks
>>> list_attacks()
['brep', 'gmi', 'ifgmi', 'miface', 'nes', 'plg', 'ppa']
"""

from __future__ import annotations

from .base import Attack as Attack
from .base import AttackResult as AttackResult
from .base import LatentAttack as LatentAttack
from .base import run_attack as run_attack
from .brep import BREPAttack as BREPAttack
from .gmi import GMIAttack as GMIAttack
from .ifgmi import IFGMIAttack as IFGMIAttack
from .ifgmi import project_l1_ball as project_l1_ball
from .losses import IDENTITY_LOSSES as IDENTITY_LOSSES
from .losses import cross_entropy_loss as cross_entropy_loss
from .losses import get_identity_loss as get_identity_loss
from .losses import logit_loss as logit_loss
from .losses import max_margin_loss as max_margin_loss
from .losses import poincare_loss as poincare_loss
from .miface import MIFaceAttack as MIFaceAttack
from .nes import NESAttack as NESAttack
from .plg import PLGAttack as PLGAttack
from .ppa import PPAAttack as PPAAttack
from .priors import FACE_PRIOR as FACE_PRIOR
from .priors import DCGANDiscriminator as DCGANDiscriminator
from .priors import DCGANGenerator as DCGANGenerator
from .priors import GenerativePrior as GenerativePrior
from ..models.images import adapt_images as adapt_images
from .priors import load_face_prior as load_face_prior
from .priors import load_prior as load_prior
from .priors import save_prior as save_prior
from .prior_training import train_prior as train_prior
from .registry import get_attack as get_attack
from .registry import list_attacks as list_attacks
from .registry import register_attack as register_attack
from .user_prior import ModulePrior as ModulePrior
from .user_prior import load_module_prior as load_module_prior
from .user_prior import wrap_module_prior as wrap_module_prior

__all__ = [
    "FACE_PRIOR",
    "IDENTITY_LOSSES",
    "Attack",
    "AttackResult",
    "BREPAttack",
    "DCGANDiscriminator",
    "DCGANGenerator",
    "GMIAttack",
    "GenerativePrior",
    "IFGMIAttack",
    "LatentAttack",
    "MIFaceAttack",
    "ModulePrior",
    "NESAttack",
    "PLGAttack",
    "PPAAttack",
    "adapt_images",
    "cross_entropy_loss",
    "get_attack",
    "get_identity_loss",
    "list_attacks",
    "load_face_prior",
    "load_module_prior",
    "load_prior",
    "logit_loss",
    "max_margin_loss",
    "poincare_loss",
    "project_l1_ball",
    "register_attack",
    "run_attack",
    "save_prior",
    "train_prior",
    "wrap_module_prior",
]
