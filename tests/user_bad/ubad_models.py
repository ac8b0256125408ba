"""Model factories that are wrong in every way a user's can be (for the bad-input tests)."""

from torch import nn

NOT_CALLABLE = 42


def good(width: int = 8) -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(16, width), nn.ReLU(), nn.Linear(width, 3))


def raises() -> nn.Module:
    raise ValueError("width must be even")


def returns_dict() -> dict:
    return {"not": "a module"}


def no_params() -> nn.Module:
    return nn.Flatten()


def fixed() -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
