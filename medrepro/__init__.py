"""medrepro: re-run published medical image classification studies (Lightning + Hydra + timm)."""

__version__ = "0.1.0"
