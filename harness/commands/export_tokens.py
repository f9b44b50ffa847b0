"""`harness export-tokens`: a SPRING checkpoint of the store as the official release's ``.pt`` file."""

from __future__ import annotations

from pathlib import Path

import typer

from harness.errors import HarnessError

FORMATS = ("official-pt",)


def export_tokens_command(
    checkpoint: Path | None = typer.Argument(
        None, help="a virtual-token .safetensors checkpoint (default: the store's one SPRING checkpoint)"
    ),
    fmt: str = typer.Option(
        "official-pt",
        "--format",
        metavar="[official-pt]",
        help="official-pt: one fp32 [n, d] tensor saved with torch.save, as the official SPRING release and FlashRAG read",
    ),
    out: Path | None = typer.Option(
        None, "--out", help="file to write (default: <results>/export/<checkpoint>.added_token_embeddings.pt)"
    ),
    results: Path = typer.Option(Path("results"), "--results", help="result store folder"),
) -> None:
    """Write a SPRING checkpoint's virtual tokens in the official release's shape; prints the file written."""
    from harness.checkpoints import export_official
    from harness.paths import writable_folder
    from harness.registry import unknown_name

    if fmt not in FORMATS:
        raise unknown_name("format", fmt, FORMATS)
    if checkpoint is None:
        found = sorted((Path(results) / "checkpoints").glob("spring-*.safetensors"))
        if len(found) != 1:
            listed = ", ".join(str(path) for path in found) if found else "none"
            raise HarnessError(
                f"{len(found)} SPRING checkpoints in {Path(results) / 'checkpoints'} ({listed}); name one: "
                "`harness export-tokens PATH` (`harness train` prints the path of the one it trains)"
            )
        checkpoint = found[0]
    if checkpoint.suffix != ".safetensors" or not checkpoint.is_file():
        raise HarnessError(f"checkpoint {checkpoint} is not a .safetensors file; pass the file `harness train` printed")
    target = out if out is not None else Path(results) / "export" / f"{checkpoint.stem}.added_token_embeddings.pt"
    writable_folder(target.parent, "--out")
    tensor = export_official(checkpoint, target)
    print(f"{target}  [{tensor.shape[0]}, {tensor.shape[1]}] fp32")


def register(app: typer.Typer) -> None:
    app.command("export-tokens")(export_tokens_command)
