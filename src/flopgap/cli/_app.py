"""The typer application every command module registers on."""

import typer

from flopgap.cli._interrupt import interruptible

HELP = """flopgap: does a low parameter count or low FLOPs make a PyTorch model fast on
this machine, and if not, why not?

Conventions: a fused multiply-add is 2 FLOPs (MACs are reported separately). Bytes
are each tensor input read once (weights included) plus each output written once;
views are free. Latency is the median of adaptive, warmed-up samples under
torch.inference_mode() with a 95% confidence interval; the first call is reported
apart as the cold start.

Models: torchvision:NAME, seed:NAME, zoo:NAME, package.module:callable, or a .pt2
(torch.export) / .pt (TorchScript) file. Inputs: --input 1x3x224x224,
--input 1x128:int64[0,30522).
"""


class FlopgapTyper(typer.Typer):
    """A ``typer.Typer`` whose commands turn Ctrl-C into a one-line message (typer
    itself would exit 130 without a word); see ``cli._interrupt``."""

    def command(self, *args, **kwargs):
        register = super().command(*args, **kwargs)

        def decorator(fn):
            register(interruptible(fn))
            return fn

        return decorator


app = FlopgapTyper(help=HELP, add_completion=False, no_args_is_help=True,
                   pretty_exceptions_enable=False, rich_markup_mode=None)
