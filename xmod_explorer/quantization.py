"""int8 on the CPU: the feed-forward blocks' Linear layers with int8 weights, activations quantised on the fly.

This is torch's dynamic quantisation (``torch.ao.quantization.quantize_dynamic``, per-output-channel
weight scales): each chosen Linear's weight is stored as int8 with one scale per output row, each input
is quantised per call, and the product runs in int8 with int32 accumulation. Only the feed-forward
blocks (two thirds of an encoder layer's multiply-adds) are quantised: on the embedded model's held-out
sentences, quantising attention's projections as well moved top-1 agreement with float32 from 99.5 %
to 98.5 %, and the language adapters and the output layer add error for little speed (measured with
``benchmarks/int8.py``). Embeddings, attention, adapters, LayerNorms and the output layer stay float32.

torch marks this API as deprecated in favour of torchao's ``quantize_`` (not a dependency of this
project); it still works in torch 2.13, and its deprecation notices are silenced here only, so the rest
of the program still shows them.

What it costs in fidelity, and what it gains in speed, is measured by ``benchmarks/int8.py``.
"""

from __future__ import annotations

import re
import warnings

import torch
from torch import nn

INT8 = "int8"
DESCRIPTION = "int8 (feed-forward weights in int8, dynamic; the rest float32)"
# XmodLayer's feed-forward block: intermediate.dense and output.dense (not attention.output.dense).
FEED_FORWARD = re.compile(r"(^|\.)layer\.\d+\.(intermediate|output)\.dense$")


def quantize_int8(model: nn.Module, chosen: re.Pattern = FEED_FORWARD) -> nn.Module:
    """model (float32, on the CPU, in eval mode) with the nn.Linear layers whose names match chosen (default:
    the feed-forward blocks) replaced by dynamically quantised ones, in place; returns the model."""
    from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

    if any(p.device.type != "cpu" for p in model.parameters()):
        raise ValueError("int8 quantisation runs on the CPU only")
    engines = torch.backends.quantized.supported_engines
    if torch.backends.quantized.engine == "none" and engines:
        torch.backends.quantized.engine = "x86" if "x86" in engines else engines[0]
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"torch\.ao\.quantization is deprecated", category=DeprecationWarning)
        warnings.filterwarnings("ignore", message=r"torch\.quantize_per_(tensor|channel)", category=UserWarning)
        spec = {
            name: per_channel_dynamic_qconfig
            for name, module in model.named_modules()
            if isinstance(module, nn.Linear) and chosen.search(name)
        }
        if not spec:
            raise ValueError("no Linear layer matches; nothing to quantise")
        return quantize_dynamic(model.float().eval(), spec, dtype=torch.qint8, inplace=True)


def is_quantized(model: nn.Module) -> bool:
    """Whether model holds dynamically quantised int8 Linear layers."""
    from torch.ao.nn.quantized.dynamic import Linear as DynamicLinear

    return any(isinstance(module, DynamicLinear) for module in model.modules())
