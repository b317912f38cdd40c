"""`lab helm`: Helm's own engine (helm-python-sdk wraps Helm's Go SDK) with a
helm-like command line, for the lab cluster (KUBECONFIG is set by `lab`).

  lab helm install NAME CHART [-n NS] [-f values.yaml]... [--set a.b=c]... [--skip-crds]
                    [--create-namespace] [--wait] [--timeout SECONDS]
  lab helm upgrade NAME CHART [-n NS] [-f ...] [--set ...] [--reuse-values] [--wait]

--skip-crds installs the chart without its crds/ (as Helm's flag does): the
lab's 1.20 API server refuses CRDs that carry CEL rules through server-side
apply, which the SDK uses for CRDs; apply them with
`kubectl apply --validate=false -f crds/` first.
  lab helm uninstall NAME [-n NS] [--timeout SECONDS]   (hooks run, as with helm)
  lab helm template NAME CHART [-n NS] [-f ...] [--set ...]
  lab helm lint CHART [-f ...] [--set ...]
  lab helm list [-n NS]
"""

import argparse
import json
import os
import shutil
import sys
import tempfile

from helm_python import Chart, Config
from helm_python.chart import lint, values_from_yaml


def set_value(values, assignment):
    """`a.b=c` as Helm's --set does for plain keys: true/false/null and
    integers become those types, `{x,y}` a list of strings, everything else
    a string."""
    if "=" not in assignment:
        sys.exit(f"--set {assignment}: expected key=value")
    key, raw = assignment.split("=", 1)
    if raw.startswith("{") and raw.endswith("}"):
        value = [v for v in raw[1:-1].split(",") if v]
    elif raw in ("true", "false"):
        value = raw == "true"
    elif raw == "null":
        value = None
    else:
        try:
            value = int(raw)
        except ValueError:
            value = raw
    node = values
    parts = key.split(".")
    for p in parts[:-1]:
        node = node.setdefault(p, {})
        if not isinstance(node, dict):
            sys.exit(f"--set {assignment}: {p} is not a map")
    node[parts[-1]] = value


def merge(into, extra):
    for k, v in extra.items():
        if isinstance(v, dict) and isinstance(into.get(k), dict):
            merge(into[k], v)
        else:
            into[k] = v


def values_of(args):
    values = {}
    for path in args.values or []:
        with open(path, encoding="utf-8") as f:
            merge(values, values_from_yaml(f.read()) or {})
    for assignment in args.set or []:
        set_value(values, assignment)
    return values


def report(r):
    """What helm prints after install/upgrade: the release, then its NOTES."""
    get = (lambda k: r.get(k)) if isinstance(r, dict) else (lambda k: getattr(r, k, None))
    print(f"NAME: {get('name')}\nNAMESPACE: {get('namespace')}\nSTATUS: {get('status')}\n"
          f"REVISION: {get('revision')}")
    if get("notes"):
        print(f"NOTES:\n{get('notes')}")


def main():
    p = argparse.ArgumentParser(prog="lab helm")
    sub = p.add_subparsers(dest="command", required=True)

    def common(sp, chart=True, name=True):
        if name:
            sp.add_argument("name")
        if chart:
            sp.add_argument("chart")
            sp.add_argument("-f", "--values", action="append")
            sp.add_argument("--set", action="append")
        sp.add_argument("-n", "--namespace", default="default")

    def waits(sp):
        # --wait: until the release's objects are ready (Helm's watcher).
        sp.add_argument("--wait", action="store_const", const="watcher")
        sp.add_argument("--timeout", type=int, default=300, help="seconds (helm: 5m)")

    install = sub.add_parser("install")
    common(install)
    waits(install)
    install.add_argument("--skip-crds", action="store_true")
    install.add_argument("--create-namespace", action="store_true")
    up = sub.add_parser("upgrade")
    common(up)
    waits(up)
    up.add_argument("--reuse-values", action="store_true")
    up.add_argument("--install", action="store_true")
    uninstall = sub.add_parser("uninstall")
    common(uninstall, chart=False)
    uninstall.add_argument("--timeout", type=int, default=300, help="seconds (helm: 5m)")
    common(sub.add_parser("template"))
    common(sub.add_parser("lint"), name=False)
    common(sub.add_parser("list"), chart=False, name=False)
    args = p.parse_args()

    config = lambda: Config(
        kubeconfig_path=os.environ["KUBECONFIG"], namespace=args.namespace
    )
    try:
        if args.command == "template":
            chart = Chart.load(args.chart)
            rendered = chart.render(values_of(args), name=args.name, namespace=args.namespace, is_install=True)
            for path in sorted(rendered):
                text = rendered[path].strip()
                if text:
                    print(f"---\n# Source: {path}\n{text}")
        elif args.command == "lint":
            result = lint(args.chart, values_of(args))
            print(json.dumps(result, indent=2, default=str))
        elif args.command == "install":
            chart_dir = args.chart
            if args.skip_crds:
                chart_dir = os.path.join(tempfile.mkdtemp(prefix="lab-helm-"), "chart")
                shutil.copytree(args.chart, chart_dir, ignore=shutil.ignore_patterns("crds"))
            r = config().install(
                Chart.load(chart_dir), args.name, values_of(args), namespace=args.namespace,
                create_namespace=args.create_namespace, wait=args.wait, timeout=args.timeout,
            )
            if args.skip_crds:
                shutil.rmtree(os.path.dirname(chart_dir), ignore_errors=True)
            report(r)
        elif args.command == "upgrade":
            c = config()
            r = c.upgrade(
                Chart.load(args.chart), args.name, values_of(args),
                namespace=args.namespace, reuse_values=args.reuse_values,
                wait=args.wait, timeout=args.timeout,
            )
            report(r)
        elif args.command == "uninstall":
            config().uninstall(args.name, timeout=args.timeout)
            print(f"uninstalled {args.name} from {args.namespace}")
        elif args.command == "list":
            print(json.dumps(config().list(), indent=2, default=str))
    except Exception as e:  # the SDK's errors say what is wrong; keep them whole
        sys.exit(f"helm {args.command}: {type(e).__name__}: {e}")


if __name__ == "__main__":
    main()
