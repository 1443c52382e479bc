"""``midefend prior adapt``: fine-tune a prior on public images of the private domain (docs/priors.md).

    midefend prior adapt --from face-gan --data public_faces/ --out adapted.safetensors
    midefend prior adapt --from face-gan --data public_faces/ --out adapted.safetensors --resume   # after a kill
    midefend verify target.safetensors --prior adapted.safetensors
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from ..errors import ConfigError
from ._common import app, console, handle_errors

prior_app = typer.Typer(help="Generator priors: adapt one to your domain.", no_args_is_help=True)
app.add_typer(prior_app, name="prior")


def _parse_box(box: Optional[str]) -> Optional[tuple[int, int, int, int]]:
    if box is None:
        return None
    try:
        values = tuple(int(v) for v in box.split(","))
    except ValueError:
        values = ()
    if len(values) != 4 or not (0 <= values[0] < values[2] and 0 <= values[1] < values[3]):
        raise typer.BadParameter(f"--box must be LEFT,TOP,RIGHT,BOTTOM pixels with left < right and top < bottom, got {box!r}")
    return values  # type: ignore[return-value]


@prior_app.command("adapt")
@handle_errors
def adapt_cmd(
    data: Annotated[Path, typer.Option("--data", help="Public images of the private domain: a folder of images or of class folders (labels ignored).", file_okay=False)],
    out: Annotated[Path, typer.Option("--out", help="The adapted prior (.safetensors; use it as --prior).", dir_okay=False)],
    base: Annotated[str, typer.Option("--from", help="'face-gan' or a midefend prior .safetensors to start from.")] = "face-gan",
    box: Annotated[Optional[str], typer.Option("--box", help="Crop every image to LEFT,TOP,RIGHT,BOTTOM before resizing (ORL's face box: 6,18,86,98), so the prior learns the target's framing.")] = None,
    steps: Annotated[int, typer.Option("--steps", help="GAN steps (one discriminator and one generator update each).", min=1)] = 300,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Images per step.", min=1)] = 32,
    lr: Annotated[float, typer.Option("--lr", help="Discriminator learning rate (the generator's is half).")] = 2e-4,
    disc_width: Annotated[int, typer.Option("--disc-width", help="Base width of the discriminator (trained from scratch).", min=1)] = 64,
    checkpoint_every: Annotated[int, typer.Option("--checkpoint-every", help="Steps between resumable state files (beside --out).", min=1)] = 25,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the discriminator, batches, noise and augmentation.")] = 0,
    resume: Annotated[bool, typer.Option("--resume", help="Continue an interrupted run from its state file beside --out.")] = False,
    device: Annotated[str, typer.Option("--device", help="cpu, cuda, ...")] = "cpu",
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
) -> None:
    """Fine-tune a prior on public images of the private domain (grey, framing, lighting) with GAN losses."""
    from ..attacks.prior_adapt import adapt_prior, state_path
    from ..attacks.priors import load_prior
    from ..data.folders import load_unlabelled_images

    crop = _parse_box(box)
    if not out.parent.is_dir():
        raise ConfigError(f"output folder {str(out.parent)!r} does not exist")
    prior = load_prior(base, device=device)
    images = load_unlabelled_images(data, size=prior.image_size, channels=prior.channels, box=crop)
    resuming = resume and state_path(out).is_file()
    console.print(f"adapting {prior.name} on {images.shape[0]} public images ({steps} steps, batch {batch_size}){'; resuming' if resuming else ''}", highlight=False)
    adapted = adapt_prior(
        prior, images, out, steps=steps, batch_size=batch_size, lr=lr, disc_width=disc_width, checkpoint_every=checkpoint_every,
        seed=seed, resume=resume, device=device, progress=not quiet,
    )  # fmt: skip
    console.print(f"adapted prior: {out} (use it with --prior {out}); prior {adapted.name!r}, {adapted.channels} channels, {adapted.image_size} px", highlight=False)
