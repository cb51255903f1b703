"""World models that learn local causal graphs (slot SSM, slot Transformer, baselines) and their parts."""

from cwm_rl.models.ssm import Mamba1Block, Mamba2Block, SSMState, cuda_kernels_available, make_ssm_block

__all__ = ["Mamba1Block", "Mamba2Block", "SSMState", "cuda_kernels_available", "make_ssm_block"]
