"""`bottleneck fit-head`, `evaluate`, `compare`, `predict` and `datasets export fashion-mnist`."""

from __future__ import annotations

from pathlib import Path

import typer

from bottleneck._ownership import check_out
from bottleneck.cli.common import force_option, print_json, say, user_errors
from bottleneck.cli.progress import progress_bar
from bottleneck.errors import BottleneckError
from bottleneck.runs.params import parse_params

FIT_HELP = """Train a head on a cache's train split, select on val, report val and test metrics, save a run folder.

The run folder holds head/ (the saved head), metrics.json, report.md, history.png and confusion.png;
its path is printed last. Heads: logreg (C chosen on val), linear, mlp, sigmoid (2 classes), pool-dense
(spatial caches from --pooling none).

Examples:

  bottleneck fit-head cache/efficientnet_lite0-3f9a2c1d --head logreg

  bottleneck fit-head cache/vgg16-0c1d2e3f --head mlp --epochs 30 --class-weight balanced --param width=512

  bottleneck fit-head cache/vgg16-0c1d2e3f --head pool-dense --out runs/signs --json
"""

EVALUATE_HELP = """Score a saved run's head on a split of a cache made with the same backbone settings and classes.

Example:

  bottleneck evaluate runs/efficientnet_lite0-3f9a2c1d-logreg cache/efficientnet_lite0-77aa0b1c --split test
"""

COMPARE_HELP = """Fit several heads on one or more caches (e.g. one per backbone) and print one table.

The table (markdown, also saved with a CSV, a JSON and a plot in --out) has accuracy, balanced accuracy
and fit time per head and cache, on test (val when a cache has no test split). --seeds N (or a list
0,1,2) repeats every fit and reports mean ± std.

Examples:

  bottleneck compare cache/efficientnet_lite0-3f9a2c1d cache/vgg16-0c1d2e3f --heads logreg,linear,mlp

  bottleneck compare cache/efficientnet_lite0-3f9a2c1d --heads linear,mlp --seeds 3 --epochs 20 --param mlp.width=512

A cache extracted with --layer blocks (or several layers) can be scored on subsets of its layers without
extracting again: --layers top --layers block6a_add,top (one row each), or --layer-search greedy, which adds
layers by forward selection on val and prints the path. A logreg row on the raw pixels of the same images
(the `pixels` backbone, extracted once) says whether transfer helps at all; --no-baseline drops it.

  bottleneck compare cache/efficientnet_lite0-3f9a2c1d --heads logreg --layers top --layer-search greedy
"""

PREDICT_HELP = """Class names and probabilities of new images with a saved run's head.

Images go through the same backbone, weights, size, resize policy, layer, pooling and preprocessing as the
cache the head was trained on. Folders are searched for images recursively.

Examples:

  bottleneck predict runs/efficientnet_lite0-3f9a2c1d-logreg photo.jpg

  bottleneck predict runs/efficientnet_lite0-3f9a2c1d-mlp new_photos/ --top 3 --json
"""

EXPORT_HELP = """Write Fashion-MNIST as DIR/{train,test}/<class>/<index>.png (28x28 grayscale PNGs).

Reads Debian's dataset-fashion-mnist files (apt-get install dataset-fashion-mnist) when installed, else
downloads the official files (needs a network). --per-class N keeps N images per class and split.

Example:

  bottleneck datasets export fashion-mnist data/fashion --per-class 100
"""


def _common(epochs, batch_size, lr, patience, class_weight) -> dict:
    given = {
        "epochs": epochs,
        "batch_size": batch_size,
        "lr": lr,
        "patience": patience,
        "class_weight": class_weight,
    }
    return {k: v for k, v in given.items() if v is not None}


def _seeds(text: str) -> list[int]:
    try:
        parts = [int(p) for p in text.split(",") if p.strip()]
    except ValueError:
        raise BottleneckError(
            f"--seeds {text!r} must be a count (3) or a list of integers (0,1,2)."
        ) from None
    if len(parts) == 1 and "," not in text:
        if parts[0] < 1:
            raise BottleneckError(f"--seeds {text} must be at least 1.")
        return list(range(parts[0]))
    if not parts:
        raise BottleneckError("--seeds is empty; pass a count (3) or a list (0,1,2).")
    return parts


def _metric_line(metrics: dict) -> str:
    return ", ".join(
        f"{split} accuracy {m['accuracy']:.4f} (balanced {m['balanced_accuracy']:.4f})"
        for split, m in metrics.items()
    )


def _run_page(run, force: bool) -> Path:
    """RUN/report/index.html: the run on its cache's test split (val, else train, when there is none)."""
    from bottleneck.cache.reader import open_cache
    from bottleneck.inspection.run_page import write_run_page

    c = open_cache(run.summary["cache"]["path"])
    split = next(s for s in ("test", "val", "train") if s in c.splits)
    return write_run_page(run, c, split=split, force=force, notify=say)


def register(app: typer.Typer) -> None:
    @app.command("fit-head", help=FIT_HELP)
    @user_errors
    def fit_head_cmd(
        cache: str = typer.Argument(
            ..., help="A cache folder made by `bottleneck extract` (or its s3:// URL)."
        ),
        head: str = typer.Option("logreg", "--head", help="logreg | linear | mlp | sigmoid | pool-dense."),
        out: Path = typer.Option(
            None, "--out", help="Run folder (default: RUNS_DIR/<cache>-<head>, made unique)."
        ),
        runs_dir: Path = typer.Option(Path("runs"), help="Where run folders go when --out is not given."),
        epochs: int = typer.Option(None, help="Keras heads: maximum epochs (default: 50)."),
        batch_size: int = typer.Option(
            None, help="Keras heads: batch size (default: rows/32 within 16..256)."
        ),
        lr: float = typer.Option(None, help="Keras heads: Adam learning rate (default: 1e-3)."),
        patience: int = typer.Option(
            None, help="Keras heads: epochs without better val loss before stopping."
        ),
        class_weight: str = typer.Option(None, help="balanced: weight classes by inverse frequency."),
        seed: int = typer.Option(0, help="random_state of the head, for reproducible runs."),
        layers: str = typer.Option(
            None, help="Fit on these layers of a multi-layer cache: names (a,b), top or multiscale."
        ),
        param: list[str] = typer.Option(
            None, "--param", help="Other head parameter, KEY=VALUE (repeatable), e.g. width=512."
        ),
        report: bool = typer.Option(
            False, "--report", help="Also write RUN/report/index.html (offline page)."
        ),
        force: bool = force_option(),
        json_out: bool = typer.Option(False, "--json", help="Print JSON."),
        quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
    ):
        from bottleneck.runs import fit_head

        params = _common(epochs, batch_size, lr, patience, class_weight) | parse_params(param, head=head)
        with progress_bar(None, quiet) as bar:  # "s/epoch", "C sweep/s": each stage's own unit
            run = fit_head(
                cache,
                head,
                params=params,
                seed=seed,
                layers=layers,
                out=out,
                runs_dir=runs_dir,
                force=force,
                progress=bar,
                notify=say,
            )
        s = run.summary
        page = _run_page(run, force) if report else None
        if json_out:
            print_json(
                {k: s[k] for k in ("head", "path", "fit_seconds", "metrics")}
                | {"selection": s["selection"]}
                | ({"report": str(page)} if page else {})
            )
            return
        if page and not quiet:
            typer.echo(f"page: {page}", err=True)
        if not quiet:
            sel = ", ".join(f"{k} {v}" for k, v in s["selection"].items())
            typer.echo(
                f"{s['head']} fitted in {s['fit_seconds']:.2f} s ({sel}): {_metric_line(s['metrics'])}",
                err=True,
            )
        typer.echo(s["path"])

    @app.command("evaluate", help=EVALUATE_HELP)
    @user_errors
    def evaluate_cmd(
        run_dir: Path = typer.Argument(..., help="A run folder made by `bottleneck fit-head`."),
        cache: str = typer.Argument(
            ..., help="A cache with the same backbone settings and classes (or its URL)."
        ),
        split: str = typer.Option("test", help="Split to score."),
        report: Path = typer.Option(
            None, "--report", help="Also write an offline page (index.html + thumbnails) into this folder."
        ),
        force: bool = force_option(),
        json_out: bool = typer.Option(False, "--json", help="Print JSON."),
    ):
        from bottleneck.report import markdown_table
        from bottleneck.runs import evaluate_run

        if report is not None:
            check_out(report, force=force, param="report")  # before scoring, not after
        result = evaluate_run(run_dir, cache, split=split)
        if report is not None:
            from bottleneck.inspection.run_page import write_run_page

            page = write_run_page(run_dir, cache, split=split, out=report, force=force, notify=say)
            result["report"] = str(page)
            typer.echo(f"page: {result['report']}", err=True)
        if json_out:
            print_json(result)
            return
        m = result["metrics"][split]
        typer.echo(f"{result['head']} head from {run_dir} on {cache} ({split}, {m['n']} rows)")
        rows = [["accuracy", m["accuracy"]], ["balanced accuracy", m["balanced_accuracy"]]]
        if "top5_accuracy" in m:
            rows.append(["top-5 accuracy", m["top5_accuracy"]])
        rows.append(["log loss", m["log_loss"]])
        typer.echo(markdown_table(["metric", "value"], rows), nl=False)

    @app.command("compare", help=COMPARE_HELP)
    @user_errors
    def compare_cmd(
        caches: list[str] = typer.Argument(..., help="Cache folders (e.g. one per backbone), or their URLs."),
        heads: str = typer.Option("logreg,linear,mlp", help="Comma-separated head names."),
        seeds: str = typer.Option("1", help="How many seeds (3 = 0,1,2) or a list (0,1,2)."),
        out: Path = typer.Option(
            Path("runs/compare"), "--out", help="Where the table, CSV, JSON and plot are saved."
        ),
        epochs: int = typer.Option(None, help="Keras heads: maximum epochs."),
        batch_size: int = typer.Option(None, help="Keras heads: batch size."),
        lr: float = typer.Option(None, help="Keras heads: Adam learning rate."),
        patience: int = typer.Option(None, help="Keras heads: early-stopping patience."),
        class_weight: str = typer.Option(None, help="balanced: weight classes by inverse frequency."),
        param: list[str] = typer.Option(
            None, "--param", help="KEY=VALUE for every head that has it, or HEAD.KEY=VALUE."
        ),
        layers: list[str] = typer.Option(
            None,
            "--layers",
            help="A layer subset to score (a,b | top | multiscale); repeat for several rows.",
        ),
        layer_search: str = typer.Option(
            None, help="greedy: add the layer set chosen by forward selection on val (its path is printed)."
        ),
        baseline: bool = typer.Option(
            True, "--baseline/--no-baseline", help="Add a logreg row on the raw pixels of the same images."
        ),
        report: bool = typer.Option(
            False,
            "--report",
            help="Also write OUT/report/index.html: the table and the best row's predictions.",
        ),
        force: bool = force_option(),
        json_out: bool = typer.Option(False, "--json", help="Print JSON."),
        quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
    ):
        from bottleneck.runs import compare

        names = [h.strip() for h in heads.split(",") if h.strip()]
        if not names:
            raise BottleneckError("--heads is empty; pass e.g. --heads logreg,linear,mlp.")
        params = _common(epochs, batch_size, lr, patience, class_weight) | parse_params(param, names)
        with progress_bar("fit", quiet) as bar:
            result = compare(
                caches,
                names,
                seeds=_seeds(seeds),
                params=params,
                layers=layers or None,
                layer_search=layer_search,
                baseline=baseline,
                out=out,
                force=force,
                progress=bar,
                notify=say,
            )
        if report:
            from bottleneck.inspection.run_page import write_compare_page

            page = write_compare_page(
                result, caches, params=params, out=Path(out) / "report", force=force, notify=say
            )
            result.paths["report"] = str(page)
        if json_out:
            print_json(result.to_json())
            return
        typer.echo(result.markdown(), nl=False)
        if not quiet:
            typer.echo(f"saved {', '.join(result.paths.values())}", err=True)

    @app.command("predict", help=PREDICT_HELP)
    @user_errors
    def predict_cmd(
        run_dir: Path = typer.Argument(..., help="A run folder made by `bottleneck fit-head`."),
        images: list[Path] = typer.Argument(..., help="Image files or folders."),
        top: int = typer.Option(3, help="How many classes to show per image."),
        batch_size: int = typer.Option(32, help="Images per forward pass."),
        json_out: bool = typer.Option(False, "--json", help="Print JSON."),
    ):
        from bottleneck.runs import predict_images

        results = predict_images(run_dir, images, top=top, batch_size=batch_size)
        if json_out:
            print_json(results)
            return
        for r in results:
            best = "  ".join(f"{t['class']} {t['prob']:.1%}" for t in r["top"])
            typer.echo(f"{r['image']}\t{best}")

    datasets_app = typer.Typer(help="Example datasets as image folders.", no_args_is_help=True)
    export_app = typer.Typer(help="Write a dataset as split/class image folders.", no_args_is_help=True)

    @export_app.command("fashion-mnist", help=EXPORT_HELP)
    @user_errors
    def export_fashion_mnist_cmd(
        out_dir: Path = typer.Argument(..., help="A new, empty folder."),
        per_class: int = typer.Option(None, help="Keep the first N images of each class in each split."),
        source: Path = typer.Option(
            None, help="Folder with the four IDX files (default: Debian's, else the download)."
        ),
        download: bool = typer.Option(True, "--download/--no-download", help="Allow the official download."),
        json_out: bool = typer.Option(False, "--json", help="Print JSON."),
        quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
    ):
        from bottleneck.data.datasets import export_fashion_mnist

        with progress_bar(quiet=quiet) as bar:
            result = export_fashion_mnist(
                out_dir, per_class=per_class, source=source, download=download, progress=bar
            )
        if json_out:
            print_json(result)
            return
        if not quiet:
            counts = ", ".join(f"{k} {v}" for k, v in result["splits"].items())
            verb = "already exported" if result["hit"] else "wrote"
            typer.echo(f"{verb} {counts} images from {result['source']}", err=True)
        typer.echo(result["path"])

    datasets_app.add_typer(export_app, name="export")
    app.add_typer(datasets_app, name="datasets")
