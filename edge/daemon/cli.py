"""`edge run --config edge.toml`: the MQTT daemon's command line (imports nothing heavy at the top)."""
import argparse
import sys

DESCRIPTION = """\
Run the daemon: subscribe to per-device sensor topics, advance each device's model state with its
samples (micro-batched across devices into one engine call), publish the outputs, and keep the
state across restarts (checkpoints) and broker outages (MQTT 5 persistent session, QoS 1,
acknowledged only once processed and checkpointed).

Signals: SIGTERM/SIGINT stop (final checkpoint), SIGHUP reloads the config (bundle swap included;
state kept where its layout is unchanged). Under systemd (Type=notify) it sends READY=1 once
subscribed, WATCHDOG=1 from the worker loop, STOPPING=1 on the way out.
Reference of every key, payload formats and metrics: docs/daemon.md."""

EPILOG = """\
examples:
  edge run --config examples/edge.toml
      the IMU case: sensors/<device>/imu in, attitude/<device> out, shipped imu-attitude bundle
  edge run --config examples/edge.toml --set broker.port=1884 --set state.dir=/tmp/edge-state
      the same against another broker port, with state checkpoints in /tmp/edge-state
  edge run --config examples/edge.toml --set pipeline.0.every=10 --set pipeline.0.output_format=binary
      publish every 10th output, as binary frames
  edge run --check --config examples/edge.toml
      validate the config (and load the bundles), print it, and exit
  curl -s 127.0.0.1:9108/metrics | grep edge_samples
      what went in and out (Prometheus text)"""


def add_subparser(sub) -> None:
    p = sub.add_parser("run", help="the MQTT daemon: sensor topics in, model outputs out, durable state",
                       description=DESCRIPTION, epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", "-c", required=True, metavar="FILE.toml", help="the daemon's configuration")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="overrides",
                   help="override a config key, e.g. broker.port=1884 or pipeline.0.bundle=my.onnx (repeatable)")
    p.add_argument("--check", action="store_true", help="validate the config and load the bundles, then exit")
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    p.set_defaults(func=run)


def run(args) -> int:
    import dataclasses
    import json
    import logging

    from edge.daemon.config import ConfigError, load_config
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        if args.check:
            cfg = load_config(args.config, args.overrides)
            from edge.runtime import load
            for p in cfg.pipelines:
                m = load(p.bundle, engine=p.engine)
                print(f"pipeline {p.name}: {p.bundle} -> {m.engine} ({m.reason}); "
                      f"inputs {', '.join(c['name'] for c in m.meta['inputs'])}")
            print(json.dumps(dataclasses.asdict(cfg), indent=2))
            return 0
        from edge.daemon.service import Daemon
        return Daemon(args.config, args.overrides).run()
    except ConfigError as e:
        print(f"edge run: {e}", file=sys.stderr)
        return 2
