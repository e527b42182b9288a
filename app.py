"""REST demo: streaming audio-driven talking heads in the browser (Gradio; a Hugging Face Space).

    python app.py [--checkpoint checkpoints/rest-tiny] [--host 127.0.0.1] [--port 7860] [--share]

Tabs: *Generate* (portrait + speech -> the video streams into the page while it is generated,
then the full mp4 with audio is offered for download), *Live* (microphone in, video out, chunk by
chunk), *Results* (the evaluation hub's tables and plots from ``results/``).

The UI is thin: every handler hands widget values to :mod:`hub.app_session` (one engine per
browser session, created on first use, freed when the tab closes) and turns its ``ValueError``s
into messages on the page. Nothing is loaded at import time; :func:`build_demo` builds the UI.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import gradio as gr

from hub.app_session import (
    DEMO_LIMITS,
    STREAM_PRESETS,
    EngineFactory,
    SessionRegistry,
    StreamConfig,
    StreamUpdate,
    default_engine_factory,
    find_checkpoints,
    is_rest_checkpoint,
    missing_checkpoint_message,
)
from hub.settings import REPO_ROOT

DEFAULT_CHECKPOINT = "checkpoints/rest-tiny"
DEFAULT_RESULTS = "results"
OUTPUT_SIZES = ("model size", "128", "256", "512")
DEMO_ASSETS = REPO_ROOT / "demo_assets"
LIVE_STOP_WAIT_S = 120.0  # how long "stop recording" waits for the live video to be finished

INTRO = """\
# REST: real-time streaming talking heads

Give a portrait and some speech: the video is generated chunk by chunk by a causal diffusion student
(ID-Context Cache, asynchronous streaming distillation; [arXiv 2512.11229](https://arxiv.org/abs/2512.11229))
and streams into the page while it is being made. Research demo: do not animate people without their consent.
"""


# ------------------------------------------------------------------------------------------------
# small helpers (pure; tested directly)
# ------------------------------------------------------------------------------------------------


def checkpoint_defaults(checkpoint: str) -> dict:
    """Sampling defaults and sizes stored in a checkpoint's config.json (no model loading)."""
    defaults = {"steps": 4, "guidance": 1.0, "context_chunks": 4, "context_noise": 0.0, "image_size": None}
    try:
        config = json.loads((Path(checkpoint) / "config.json").read_text())["config"]
        defaults.update(steps=int(config["sampling"]["steps"]), guidance=float(config["sampling"]["guidance"]),
                        context_chunks=int(config["dit"]["context_chunks"]),
                        context_noise=float(config["sampling"].get("context_noise", 0.0)),
                        image_size=int(config["vae"]["image_size"]))
    except (OSError, ValueError, KeyError, TypeError):
        pass
    return defaults


def engine_settings(steps, seed, guidance, context, id_sink, output_size, context_noise=0.0):
    """Widget values -> :class:`hub.engine.EngineSettings` (ValueError with the accepted range)."""
    from hub.engine import EngineSettings

    try:
        seed = int(seed if seed is not None else 0)
    except (TypeError, ValueError):
        raise ValueError(f"seed={seed!r}; use a whole number") from None
    if not 0 <= seed < 2**63:
        raise ValueError(f"seed={seed}; accepted: 0 .. 2^63-1")
    size = None if output_size in (None, "", OUTPUT_SIZES[0]) else int(output_size)
    return EngineSettings(steps=int(steps), seed=seed, guidance=float(guidance), context_chunks=int(context),
                          context_noise=float(context_noise), use_id_sink=bool(id_sink), output_size=size)


def format_readout(stats: dict, done: bool) -> str:
    """The live readout under the video (Markdown)."""
    if not stats:
        return ""

    def value(key: str, fmt: str, unit: str = "") -> str:
        v = stats.get(key)
        return "–" if v is None else f"{v:{fmt}}{unit}"

    rtf = stats.get("rtf")
    pace = "" if rtf is None else (" (faster than real time)" if rtf < 1 else " (slower than real time)")
    state = "done" if done else "streaming…"
    return (f"**{state}** · time to first frame **{value('time_to_first_frame_s', '.2f', ' s')}** · "
            f"first chunk on its way **{value('first_chunk_s', '.2f', ' s')}** · "
            f"generation **{value('fps', '.1f', ' fps')}** · real-time factor **{value('rtf', '.2f')}**{pace} · "
            f"{value('seconds', '.2f', ' s')} of video · {value('steps', 'd')} steps/chunk · "
            f"algorithmic latency {value('algorithmic_latency_ms', '.0f', ' ms')}")


def example_rows() -> list[list[str]]:
    """Portrait + speech example pairs (shared data or fetched cache), plus our espeak-ng speech."""
    from hub.assets import example_pairs

    rows = [[str(p), str(s)] for p, s in example_pairs()]
    espeak = DEMO_ASSETS / "espeak_hello.wav"
    if rows and espeak.is_file():
        rows.append([rows[0][0], str(espeak)])
    return rows


# ------------------------------------------------------------------------------------------------
# the UI
# ------------------------------------------------------------------------------------------------


def _stream_to_page(updates: Iterator[StreamUpdate]):
    """StreamUpdates -> (video chunk, readout, face crop, download) tuples; errors -> gr.Error."""
    try:
        for update in updates:
            for note in update.notes:
                gr.Warning(note)
            yield (str(update.chunk_path) if update.chunk_path else None,
                   format_readout(update.stats, update.done),
                   update.crop if update.crop is not None else gr.skip(),
                   str(update.final_path) if update.final_path else None)
    except ValueError as exc:  # user mistakes (incl. BusyError): a message, never a traceback
        raise gr.Error(str(exc), print_exception=False) from None


def build_demo(checkpoint: str = DEFAULT_CHECKPOINT, results_dir: str | os.PathLike = DEFAULT_RESULTS,
               engine_factory: EngineFactory | None = None,
               stream_config: StreamConfig = STREAM_PRESETS["cpu"]) -> gr.Blocks:
    """Build the demo (nothing is loaded until a session generates its first video).

    Args:
        checkpoint: the REST checkpoint folder selected by default (listed even when it is not
            under ``checkpoints/``). A missing one is reported on the page, not at startup.
        results_dir: the evaluation hub's results folder for the Results tab.
        engine_factory: ``checkpoint -> StreamingEngine``; the default loads each checkpoint once
            and gives every session its own engine (tests inject tiny models here).
        stream_config: chunk lengths and stream limits (``STREAM_PRESETS``).
    """
    registry = SessionRegistry(engine_factory or default_engine_factory(), config=stream_config,
                               limits=DEMO_LIMITS)
    checkpoints = find_checkpoints(extra=[checkpoint])
    if checkpoint not in checkpoints:
        checkpoints.insert(0, checkpoint)  # selectable, so that the page says what is missing
    defaults = checkpoint_defaults(checkpoint)
    examples = example_rows()
    notices = []
    if not is_rest_checkpoint(checkpoint):
        notices.append(missing_checkpoint_message(checkpoint))
    if not examples:
        notices.append("No example inputs found: set `REST_DATA_DIR` to the shared data folder or run "
                       "`python -m hub.assets fetch`. You can still upload your own portrait and speech.")

    # delete_cache: Gradio's copies of served files (chunks, downloads) older than 1 h, checked hourly
    with gr.Blocks(title="REST streaming talking heads", delete_cache=(3600, 3600)) as demo:
        gr.Markdown(INTRO)
        notice = gr.Markdown("\n\n".join(f"⚠️ {n}" for n in notices), visible=bool(notices),
                             elem_id="notice")
        with gr.Accordion("Settings", open=False):
            with gr.Row():
                ckpt = gr.Dropdown(checkpoints, value=checkpoint, label="Checkpoint", elem_id="checkpoint")
                steps = gr.Slider(1, 8, value=defaults["steps"], step=1, label="Sampling steps per chunk")
                seed = gr.Number(0, precision=0, label="Seed")
            with gr.Row():
                guidance = gr.Slider(1.0, 5.0, value=defaults["guidance"], step=0.1,
                                     label="Audio guidance (1 = off; > 1 doubles the model calls)")
                context = gr.Slider(0, defaults["context_chunks"], value=defaults["context_chunks"], step=1,
                                    label="Context window (chunks)")
                context_noise = gr.Slider(0.0, 0.5, value=defaults["context_noise"], step=0.05,
                                          label="Context noise (0 = clean past; 0.1-0.3 keeps the face stable)")
                id_sink = gr.Checkbox(True, label="ID-Sink (attend to the reference)")
                size = gr.Dropdown(list(OUTPUT_SIZES), value="256", label="Output size (pixels)")
        settings = [ckpt, steps, seed, guidance, context, id_sink, size, context_noise]

        with gr.Tabs():
            with gr.Tab("Generate", id="generate"):
                with gr.Row():
                    with gr.Column():
                        portrait = gr.Image(type="filepath", sources=["upload", "webcam", "clipboard"],
                                            label="Portrait (one clearly visible face)", elem_id="portrait")
                        speech = gr.Audio(type="filepath", sources=["upload", "microphone"],
                                          label=f"Speech (up to {DEMO_LIMITS.max_audio_seconds:.0f} s)",
                                          elem_id="speech")
                        with gr.Row():
                            generate = gr.Button("Generate", variant="primary", elem_id="generate-btn")
                            stop = gr.Button("Stop", elem_id="stop-btn")
                    with gr.Column():
                        video = gr.Video(streaming=True, autoplay=True, label="Talking head (streaming)",
                                         elem_id="video-out")
                        readout = gr.Markdown(elem_id="readout")
                        with gr.Row():
                            crop = gr.Image(label="Face crop being animated", interactive=False, height=160,
                                            elem_id="crop")
                            download = gr.File(label="Download mp4 (with audio)", elem_id="download")
                if examples:
                    gr.Examples(examples, inputs=[portrait, speech], label="Examples (portrait + speech)",
                                examples_per_page=8)

            with gr.Tab("Live", id="live"):
                gr.Markdown("Pick a portrait, then press record and speak: the video follows your voice "
                            f"chunk by chunk (up to {stream_config.live_max_seconds:.0f} s). "
                            "Press stop to finish and download the whole video.")
                with gr.Row():
                    with gr.Column():
                        live_portrait = gr.Image(type="filepath", sources=["upload", "webcam", "clipboard"],
                                                 label="Portrait", elem_id="live-portrait")
                        mic = gr.Audio(sources=["microphone"], type="numpy", streaming=True,
                                       label="Microphone", elem_id="mic")
                    with gr.Column():
                        live_video = gr.Video(streaming=True, autoplay=True, label="Live talking head",
                                              elem_id="live-video")
                        live_readout = gr.Markdown(elem_id="live-readout")
                        with gr.Row():
                            live_crop = gr.Image(label="Face crop", interactive=False, height=160)
                            live_download = gr.File(label="Download mp4 (with audio)", elem_id="live-download")
                if examples:
                    gr.Examples([[p] for p in sorted({row[0] for row in examples})], inputs=[live_portrait],
                                label="Example portraits")

            with gr.Tab("Results", id="results"):
                refresh = gr.Button("Refresh", size="sm")
                results_md = gr.Markdown(elem_id="results-md")
                results_plot = gr.Plot(label="Mean over clips (± std)")

        # -- handlers (thin: widgets -> adapter -> widgets) ---------------------------------------
        def on_generate(portrait_path, speech_path, ckpt_value, steps_value, seed_value, guidance_value,
                        context_value, sink_value, size_value, noise_value, request: gr.Request):
            try:
                options = engine_settings(steps_value, seed_value, guidance_value, context_value, sink_value,
                                          size_value, noise_value)
                session = registry.get(request.session_hash if request else None)
                updates = session.stream_file(portrait_path, speech_path, ckpt_value, options)
            except ValueError as exc:
                raise gr.Error(str(exc), print_exception=False) from None
            yield None, "", None, None  # clear the previous video and download
            yield from _stream_to_page(updates)

        def on_live(portrait_path, ckpt_value, steps_value, seed_value, guidance_value, context_value,
                    sink_value, size_value, noise_value, request: gr.Request):
            try:
                options = engine_settings(steps_value, seed_value, guidance_value, context_value, sink_value,
                                          size_value, noise_value)
                session = registry.get(request.session_hash if request else None)
                updates = session.stream_live(portrait_path, ckpt_value, options)
            except ValueError as exc:
                raise gr.Error(str(exc), print_exception=False) from None
            yield None, "", None, None
            yield from _stream_to_page(updates)

        def on_mic(piece, request: gr.Request):
            if piece is not None:
                rate, data = piece
                registry.get(request.session_hash if request else None).live_feed(rate, data)

        def on_mic_stop(request: gr.Request):
            session = registry.get(request.session_hash if request else None)
            final = session.live_stop(wait_seconds=LIVE_STOP_WAIT_S)
            if final is None:
                return gr.skip(), gr.skip()
            return format_readout(final.stats, done=True), str(final.final_path)

        def on_checkpoint(path: str):
            d = checkpoint_defaults(path)
            message = None if is_rest_checkpoint(path) else missing_checkpoint_message(path)
            return (gr.update(value=d["steps"]), gr.update(value=d["guidance"]),
                    gr.update(maximum=max(d["context_chunks"], 1), value=d["context_chunks"]),
                    gr.update(value=d["context_noise"]),
                    gr.update(value=f"⚠️ {message}" if message else "", visible=bool(message)))

        def on_results():
            view = load_results_view(results_dir)
            return view.markdown, view.figure

        def on_unload(request: gr.Request):
            registry.close(request.session_hash if request else None)

        gen_event = generate.click(on_generate, [portrait, speech, *settings],
                                   [video, readout, crop, download],
                                   concurrency_limit=stream_config.max_streams, concurrency_id="generate",
                                   api_name="generate")
        stop.click(None, None, None, cancels=[gen_event])
        mic.start_recording(on_live, [live_portrait, *settings], [live_video, live_readout, live_crop, live_download],
                            concurrency_limit=None, api_name="live")
        mic.stream(on_mic, [mic], None, stream_every=0.5, time_limit=int(stream_config.live_max_seconds) + 5,
                   concurrency_limit=None, api_name=False, show_progress="hidden")
        mic.stop_recording(on_mic_stop, None, [live_readout, live_download], concurrency_limit=None,
                           api_name=False, show_progress="hidden")
        ckpt.change(on_checkpoint, [ckpt], [steps, guidance, context, context_noise, notice], api_name=False)
        refresh.click(on_results, None, [results_md, results_plot], api_name=False)
        demo.load(on_results, None, [results_md, results_plot], api_name=False)
        demo.unload(on_unload)
    demo.rest_registry = registry  # for tests and for shutting down
    return demo


def load_results_view(results_dir: str | os.PathLike):
    from hub.app_results import load_results

    return load_results(results_dir)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", default=DEFAULT_CHECKPOINT, help="REST checkpoint folder (default: %(default)s)")
    parser.add_argument("--results", default=DEFAULT_RESULTS, help="evaluation results folder (default: %(default)s)")
    parser.add_argument("--host", default=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"),
                        help="address to listen on (0.0.0.0 for every interface; default: %(default)s)")
    parser.add_argument("--port", type=int, default=int(os.environ.get("GRADIO_SERVER_PORT", 7860)))
    parser.add_argument("--share", action="store_true", help="also create a public gradio.live link")
    parser.add_argument("--preset", choices=sorted(STREAM_PRESETS), default=None,
                        help="stream chunking preset (default: gpu when CUDA is available, else cpu)")
    args = parser.parse_args(argv)
    if args.preset is None:
        import torch

        args.preset = "gpu" if torch.cuda.is_available() else "cpu"
    if not is_rest_checkpoint(args.checkpoint):
        print(f"warning: {missing_checkpoint_message(args.checkpoint)}", file=sys.stderr)
    config = STREAM_PRESETS[args.preset]
    demo = build_demo(args.checkpoint, args.results, stream_config=config)
    demo.queue(max_size=4 * config.max_streams + 4, default_concurrency_limit=config.max_streams)
    try:
        demo.launch(server_name=args.host, server_port=args.port, share=args.share,
                    max_file_size=f"{DEMO_LIMITS.max_file_mb:.0f}mb")
    finally:
        demo.rest_registry.close_all()
    return 0


if __name__ == "__main__":
    sys.exit(main())
