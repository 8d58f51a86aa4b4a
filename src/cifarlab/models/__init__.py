"""Models: a registry of named factories (ResNets in the CIFAR layout, the studies' own networks, the fast
nets, and torchvision-layout ImageNet nets)."""

from . import fast, imagenet, resnet, seed_nets  # noqa: F401  (registers the models)
from .registry import create_model, list_models, register_model
from .summary import Summary, count_params, parse_budget, summarize

__all__ = ["Summary", "count_params", "create_model", "list_models", "parse_budget", "register_model",
           "summarize"]
