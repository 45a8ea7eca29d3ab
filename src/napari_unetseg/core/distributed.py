"""Prediction on a dask cluster: blockwise volumes and folders of scans.

* :func:`connect` gives a ``dask.distributed.Client``: a ``LocalCluster`` of N worker
  processes with one thread each, or the scheduler at an address (``tcp://host:8786``);
  a scheduler that does not answer within ``timeout`` seconds is a one-line error.
* :func:`predict_blockwise_distributed` runs the phases of :mod:`.blockwise` as dask
  tasks: the blocks of a zarr volume are predicted in parallel and written straight into
  the output OME-Zarr (one chunk per block, so workers never write the same chunk), then
  instances are stitched. The result equals the one-process :func:`~.blockwise.
  predict_blockwise`.
* :func:`predict_folder_distributed` spreads the cases of a folder over the workers.

Each worker loads a model once: the network is cached per process, keyed by the model
file (path, size and modification time) and the settings, and torch uses one thread per
worker. Inputs, outputs and the model must be on a file system every worker sees.
"""

from __future__ import annotations

import functools
import os
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from .events import Cancelled, CancelToken, Done, Event, Info, Progress

#: Seconds to wait for a scheduler given by address.
CONNECT_TIMEOUT = 10.0

_CACHE: dict[str, Any] = {}
#: Models loaded by this process (tests check that a worker loads a model once).
LOADS: list[str] = []


def connect(scheduler: str | None = None, *, workers: int = 2, timeout: float = CONNECT_TIMEOUT):
    """A ``dask.distributed.Client``.

    Args:
        scheduler: address of a running scheduler (``tcp://host:8786``); ``None`` starts
            a ``LocalCluster`` of ``workers`` processes with one thread each.
        workers: processes of the local cluster.
        timeout: seconds to wait for ``scheduler`` (default :data:`CONNECT_TIMEOUT`).

    Raises:
        ValueError: one line, when no scheduler answers at the address in time, or for
            fewer than one worker.
    """
    from distributed import Client, LocalCluster

    if scheduler is None:
        if workers < 1:
            raise ValueError(f"--workers must be at least 1, not {workers}")
        cluster = LocalCluster(
            n_workers=workers,
            threads_per_worker=1,
            processes=True,
            dashboard_address=None,
            env={"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"},
        )
        return Client(cluster)
    timeout = CONNECT_TIMEOUT if timeout is None else timeout
    try:
        return Client(scheduler, timeout=timeout)
    except (OSError, TimeoutError) as exc:
        raise ValueError(
            f"no dask scheduler answers at {scheduler} within {timeout:g} s; start one "
            "(`dask scheduler`, then `dask worker ADDRESS` on each machine) and give its "
            "address, e.g. tcp://host:8786"
        ) from exc


def _model_key(model_path: str | os.PathLike, *parts: Any) -> str:
    st = Path(model_path).stat()
    return repr((str(Path(model_path).resolve()), st.st_size, st.st_mtime_ns, *parts))


def cached_checkpoint(model_path: str | os.PathLike):
    """The checkpoint of ``model_path``, loaded once per process (torch: one thread)."""
    import torch

    key = _model_key(model_path)
    if key not in _CACHE:
        from .checkpoint import load_checkpoint

        torch.set_num_threads(1)
        _CACHE.clear()  # one model per worker at a time
        _CACHE[key] = load_checkpoint(model_path)
        LOADS.append(str(model_path))
    return _CACHE[key]


def cached_predictor(model_path: str, config: Any, spatial: tuple[int, ...], normalizer: Any):
    """A :class:`~.blockwise.BlockPredictor` for the model (with ``normalizer``, fitted to
    the image), built once per process."""
    import dataclasses

    from .blockwise import BlockPredictor

    key = "predictor" + _model_key(model_path, repr(config), spatial, repr(normalizer))
    if key not in _CACHE:
        ckpt = dataclasses.replace(cached_checkpoint(model_path), normalizer=normalizer)
        _CACHE[key] = BlockPredictor(ckpt, config, spatial)
    return _CACHE[key]


def _executor(
    client, cancel: CancelToken | None
) -> Callable[[Callable, Iterable[tuple]], Iterator]:
    from distributed import as_completed

    def execute(fn: Callable, args: Iterable[tuple]) -> Iterator[Any]:
        args = list(args)
        if not args:
            return
        job = client.scatter(args[0][0], broadcast=True, hash=False)
        rest = [list(col) for col in zip(*(a[1:] for a in args))]
        futures = client.map(fn, [job] * len(args), *rest, pure=False)
        try:
            for future in as_completed(futures):
                if cancel is not None and cancel.cancelled:
                    raise Cancelled("cancelled by the user")
                yield future.result()
        finally:
            client.cancel(futures)

    return execute


def predict_blockwise_distributed(
    model_path: str | os.PathLike,
    image_path: str | os.PathLike,
    out_path: str | os.PathLike,
    *,
    client,
    instances: str | os.PathLike | None = None,
    block: Any = None,
    halo: Any = None,
    config: Any = None,
    overwrite: bool = False,
    allow_missing_chunks: bool = False,
    cancel: CancelToken | None = None,
) -> Iterator[Event]:
    """:func:`~.blockwise.predict_blockwise` of a zarr / OME-Zarr volume on dask workers.

    Args:
        model_path: the model file (loaded once per worker).
        image_path: the zarr / OME-Zarr image ``(C, *spatial)``.
        out_path: OME-Zarr labels to write (atomically, complete or not at all).
        client: a ``dask.distributed.Client`` (see :func:`connect`).
        instances: instance task: OME-Zarr of the stitched object ids.
        block, halo, config, overwrite: as for ``predict_blockwise``.

    Yields Info, Progress per block, then Done with a ``BlockwiseResult``.
    """
    from .blocks import plan_blocks
    from .blockwise import (
        BlockJob,
        BlockwiseResult,
        check_input,
        fit_to_image,
        open_targets,
        run_job,
    )
    from .io.zarr import open_zarr_volume

    ckpt = cached_checkpoint(model_path)
    config = config if config is not None else ckpt.config.infer
    image = open_zarr_volume(image_path, allow_missing_chunks=allow_missing_chunks)
    for note in image.meta.extra.get("notes", []):
        yield Info(note, level="warning")
    spatial = check_input(ckpt, image)
    if instances is not None and ckpt.task != "instances":
        raise ValueError(f"instances need a model trained for instances; {model_path} is not")
    fitted = fit_to_image(ckpt, image, image.meta)
    predictor = functools.partial(
        cached_predictor, str(model_path), config, spatial, fitted.normalizer
    )
    plan = plan_blocks(
        spatial,
        predictor().window,
        config.overlap,
        steps=predictor().steps,
        block=block,
        halo=halo,
        instances=instances is not None,
    )
    workers = len(client.scheduler_info().get("workers", {}))
    yield Info(f"{plan.describe()}, on {workers} dask worker(s)")
    t0 = time.perf_counter()
    try:
        with ExitStack() as stack:
            labels, inst, scratch = open_targets(
                stack, plan, out_path, instances, image.meta, overwrite
            )
            job = BlockJob(plan, image, labels, inst, scratch, predictor, config.min_size)
            run = run_job(job, _executor(client, cancel), cancel, pass_cancel=False)
            objects, warnings = yield from run
    except Cancelled:
        yield Done(result=None, cancelled=True, message="cancelled")
        return
    seconds = time.perf_counter() - t0
    result = BlockwiseResult(
        Path(out_path),
        instances and Path(instances),
        spatial,
        len(plan.blocks),
        objects,
        seconds,
        warnings,
    )
    yield Done(result=result, message=f"predicted {len(plan.blocks)} block(s) in {seconds:.1f} s")


def _predict_case(model_path: str, paths: list[str], target: str, config: Any, overwrite: bool):
    """One case on a worker: read, predict, write; returns the target path."""
    from .inference import predict_volume
    from .io import read_channels, write_labels

    ckpt = cached_checkpoint(model_path)
    image, meta = read_channels(paths)
    pred = predict_volume(ckpt, image, config, keep_probabilities=False)
    return str(write_labels(pred.labels, meta, target, overwrite=overwrite))


def predict_folder_distributed(
    model_path: str | os.PathLike,
    input_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    client,
    *,
    config: Any = None,
    overwrite: bool = False,
    cancel: CancelToken | None = None,
) -> Iterator[Event]:
    """:func:`~.batch.predict_folder` with the cases spread over dask workers.

    Each output ``out_dir/CASE<ending>`` has its source's geometry and format; cases whose
    output exists are skipped unless ``overwrite``; a failed case is reported and the
    others go on. Yields Info, Progress per case (stage ``"cases"``), then Done with a
    :class:`~.batch.BatchResult`.
    """
    from distributed import as_completed

    from .batch import BatchResult, _reason, output_name
    from .dataset import find_cases
    from .io import file_stem
    from .outputs import check_outputs, check_writable_folder

    input_dir, out_dir = Path(input_dir), Path(out_dir)
    cases = find_cases(input_dir)
    check_outputs([], [input_dir], folders=[out_dir])
    if out_dir.resolve() == input_dir.resolve():
        raise ValueError(f"the output folder {out_dir} is the input folder; write elsewhere")
    check_writable_folder(out_dir)
    config = config if config is not None else cached_checkpoint(model_path).config.infer
    result = BatchResult()
    t0 = time.perf_counter()
    futures = {}
    for name, paths in cases:
        ending = Path(paths[0]).name[len(file_stem(Path(paths[0]))) :]
        target = out_dir / output_name(name, ending)
        if target.exists() and not overwrite:
            result.skipped.append(name)
            continue
        future = client.submit(
            _predict_case,
            str(model_path),
            [str(p) for p in paths],
            str(target),
            config,
            overwrite,
            pure=False,
        )
        futures[future] = name
    yield Info(
        f"{len(cases)} case(s) in {input_dir} over dask workers; "
        f"{len(result.skipped)} already done"
    )
    done = len(result.skipped)
    for future in as_completed(list(futures)):
        if cancel is not None and cancel.cancelled:
            client.cancel(list(futures))
            break
        name = futures[future]
        try:
            result.outputs[name] = Path(future.result())
            result.done.append(name)
        except Exception as exc:  # one broken case must not stop the others
            result.failed[name] = _reason(exc)
            yield Info(f"{name}: failed: {result.failed[name]}", level="warning")
        done += 1
        yield Progress(done, len(cases), "cases")
    result.seconds = time.perf_counter() - t0
    cancelled = cancel is not None and cancel.cancelled
    yield Done(result=result, cancelled=cancelled, message=result.summary())


# --------------------------------------------------------------------------- command line


def _client(workers: int | None, scheduler: str | None):
    """A client for ``--workers`` / ``--scheduler`` and a function closing what it started."""
    client = connect(scheduler, workers=workers or 2)

    def close() -> None:
        cluster = client.cluster if scheduler is None else None
        client.close()
        if cluster is not None:
            cluster.close()

    return client, close


def predict_to_zarr(
    *,
    model: str | os.PathLike,
    images: list[str],
    out: str | os.PathLike,
    instances: str | os.PathLike | None = None,
    workers: int | None = None,
    scheduler: str | None = None,
    block: Any = None,
    halo: Any = None,
    settings: Callable[[Any], Any] | None = None,
    overwrite: bool = False,
    allow_missing_chunks: bool = False,
    quiet: bool = False,
) -> list[Path]:
    """``unetseg predict`` for large volumes: blockwise into OME-Zarr (labels, and
    instances for an instance model), in this process or on dask (``workers`` /
    ``scheduler``). ``images``: one zarr store, or image files read into memory (one per
    channel). Returns the paths written."""
    from .blockwise import predict_blockwise
    from .io import is_zarr_path, read_channels
    from .io.zarr import open_zarr_volume
    from .outputs import check_outputs
    from .progress import drain

    check_outputs([out, instances], [model, *images], overwrite=overwrite)
    ckpt = cached_checkpoint(model)
    cfg = ckpt.config.copy()
    cfg = settings(cfg) if settings is not None else cfg
    zarr_in = len(images) == 1 and is_zarr_path(images[0])
    if (workers or scheduler) and not zarr_in:
        raise ValueError("--workers / --scheduler read a zarr image (--image scan.ome.zarr)")
    if workers or scheduler:
        client, close = _client(workers, scheduler)
        try:
            drain(
                predict_blockwise_distributed(
                    model,
                    images[0],
                    out,
                    client=client,
                    instances=instances,
                    block=block,
                    halo=halo,
                    config=cfg.infer,
                    overwrite=overwrite,
                    allow_missing_chunks=allow_missing_chunks,
                ),
                "blocks",
                quiet,
            )
        finally:
            close()
    else:
        image: Any  # a ZarrVolume or a (C, *spatial) numpy array
        if zarr_in:
            image = open_zarr_volume(images[0], allow_missing_chunks=allow_missing_chunks)
            meta = image.meta
        else:
            image, meta = read_channels(images)
        drain(
            predict_blockwise(
                ckpt,
                image,
                out,
                instances=instances,
                block=block,
                halo=halo,
                config=cfg.infer,
                meta=meta,
                overwrite=overwrite,
            ),
            "blocks",
            quiet,
        )
    return [Path(p) for p in (out, instances) if p is not None]


def predict_folder_on_dask(
    *,
    model: str | os.PathLike,
    input_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    workers: int | None = None,
    scheduler: str | None = None,
    settings: Callable[[Any], Any] | None = None,
    overwrite: bool = False,
    quiet: bool = False,
):
    """``unetseg predict --input DIR --workers N`` / ``--scheduler ADDR``: returns the
    :class:`~.batch.BatchResult`."""
    from .progress import drain

    cfg = cached_checkpoint(model).config.copy()
    cfg = settings(cfg) if settings is not None else cfg
    client, close = _client(workers, scheduler)
    try:
        events = predict_folder_distributed(
            model, input_dir, out_dir, client, config=cfg.infer, overwrite=overwrite
        )
        return drain(events, "cases", quiet).result
    finally:
        close()
