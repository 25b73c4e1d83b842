#!/usr/bin/env python3
"""Per-request cost, counted rather than timed: user-space instructions (callgrind) and
system calls (strace -c), for vertex-proxy and for nginx as a proxy, both relaying the same
JSON chat completion to the same nginx fake upstream over one keep-alive client connection.

Counts are deterministic where wall-clock throughput on a shared 2-core machine is not.
Each figure is (total with N requests - total with none) / N.

Usage, from the project root after `cargo build --release`:
  python3 bench/cost.py [--requests N] [--json] [--only NAME] [--keep DIR]
VP_BIN picks another binary (`--profile profiling` for one with symbols); --keep DIR keeps each
callgrind file there, for `callgrind_annotate`. Needs nginx with the echo module, valgrind and
strace (apt: nginx libnginx-mod-http-echo valgrind strace).

A copy of ../shared/tools/cost.py with one fix: nginx, stopped under valgrind, sometimes
took its SIGQUIT without leaving `epoll_wait`. Valgrind restarts a system call that a signal
interrupted before the call was under way, so nginx, whose handler only sets a flag, went
back to waiting; the old script then killed it after 60 s, and callgrind writes nothing for
a killed process (the file had no `totals:` line). `stop` now repeats the signal until the
process exits.
"""
import argparse
import http.client
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

FILES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "cost-files")
KEEP = None
KEY = "sk-bench-0123456789abcdef"
BODY = json.dumps({"model": "flash", "messages": [{"role": "user", "content": "hi"}]})


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, deadline=60.0):
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return True
        except OSError:
            time.sleep(0.05)
    return False


def drive(port, n, warm_up=False):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    tries = 0
    while n > 0:
        c.request("POST", "/v1/chat/completions", BODY, {"x-api-key": KEY, "content-type": "application/json"})
        r = c.getresponse()
        body = r.read()
        # Under valgrind the proxy's first token fetch, racing the first request, sometimes
        # ends in google-cloud-auth's "transient errors" (4 runs in 12 at 950f4a6): the
        # warm-up asks again, as a client would.
        if warm_up and r.status == 502 and b"token_unavailable" in body and tries < 10:
            tries += 1
            continue
        if r.status != 200:
            raise SystemExit("status %d: %s" % (r.status, body[:500]))
        n -= 1
    c.close()


def nginx_conf(tmp, port, up, log):
    src = open(os.path.join(FILES, "nginx-proxy.conf")).read()
    conf = (src.replace("__PORT__", str(port)).replace("__UPSTREAM_PORT__", str(up))
            .replace("__PREFIX__", tmp).replace("__WORKERS__", "1")
            .replace("__PEER_DIR__", FILES))
    conf = "master_process off;\ndaemon off;\n" + conf
    if log:
        conf = conf.replace("access_log off;", "log_format j escape=json '{\"status\":$status,\"key\":\"$client_key_id\","
                            "\"uri\":\"$request_uri\",\"ua\":\"$http_user_agent\",\"t\":$request_time}';\n"
                            "    access_log %s/access.log j;" % tmp)
    os.makedirs(os.path.join(tmp, "tmp"), exist_ok=True)
    path = os.path.join(tmp, "nginx-%s.conf" % ("log" if log else "nolog"))
    open(path, "w").write(conf)
    return path


def start(cand, tmp, port, up, pre=()):
    if cand == "vertex-proxy":
        env = {"PATH": os.environ["PATH"], "HOME": tmp, "PORT": str(port), "WORKER_THREADS": "1",
               "API_KEYS_JSON": json.dumps([{"id": "bench", "key": KEY}]), "GOOGLE_CLOUD_PROJECT": "fake-project",
               "VERTEX_BASE_URL": "http://127.0.0.1:%d" % up, "GCE_METADATA_HOST": "127.0.0.1:%d" % up}
        logf = open(os.path.join(tmp, "stdout.log"), "w")
        return started(subprocess.Popen(list(pre) + [os.environ.get("VP_BIN", os.path.abspath("target/release/vertex-proxy"))], env=env, stdout=logf, stderr=subprocess.DEVNULL))
    conf = nginx_conf(tmp, port, up, cand == "nginx+log")
    return started(subprocess.Popen(list(pre) + ["nginx", "-p", tmp, "-e", tmp + "/error.log", "-c", conf, "-g",
                                                 "user root;"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))


def started(p):
    STARTED.append(p)
    return p


STARTED = []


def stop(p, cand):
    # A signal that valgrind delivers just before nginx enters epoll_wait does not end the
    # wait (see the top): it is sent again until the process is gone.
    for _ in range(60):
        p.send_signal(signal.SIGCONT)  # a process strace let go of can be left stopped
        p.send_signal(signal.SIGTERM if cand == "vertex-proxy" else signal.SIGQUIT)
        try:
            p.wait(timeout=1)
            return
        except subprocess.TimeoutExpired:
            pass
    p.kill()
    p.wait()


def instructions(cand, n, up):
    """User-space instructions of the whole run (callgrind), with n requests after the warm-up."""
    tmp = tempfile.mkdtemp(prefix="vp-cost-")
    port = free_port()
    out = os.path.join(tmp, "callgrind.out")
    p = start(cand, tmp, port, up, ["valgrind", "--tool=callgrind", "--callgrind-out-file=" + out])
    if not wait_port(port):
        p.kill()
        raise SystemExit("%s did not start" % cand)
    try:
        drive(port, 20, warm_up=True)
        if n:
            drive(port, n)
    finally:
        stop(p, cand)
        if KEEP and os.path.exists(os.path.join(tmp, "stdout.log")):
            shutil.copy(os.path.join(tmp, "stdout.log"), os.path.join(KEEP, "stdout.%s.%d" % (cand, n)))
    text = open(out).read()
    if KEEP:
        shutil.copy(out, os.path.join(KEEP, "callgrind.%s.%d" % (cand, n)))
    shutil.rmtree(tmp, ignore_errors=True)
    return int(re.search(r"^(?:summary|totals): (\d+)", text, re.M).group(1))


def syscalls(cand, n, up):
    """System calls during n requests: strace attached to every thread after the warm-up, and
    the same stretch of idle time subtracted."""
    tmp = tempfile.mkdtemp(prefix="vp-cost-")
    port = free_port()
    p = start(cand, tmp, port, up)
    if not wait_port(port):
        p.kill()
        raise SystemExit("%s did not start" % cand)
    drive(port, 20, warm_up=True)
    time.sleep(0.3)

    def traced(work):
        tids = os.listdir("/proc/%d/task" % p.pid)
        out = os.path.join(tmp, "strace-%d.out" % time.monotonic_ns())
        args = ["strace", "-f", "-c", "-o", out]
        for t in tids:
            args += ["-p", t]
        s = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(0.5)
        t0 = time.monotonic()
        work()
        took = time.monotonic() - t0
        s.send_signal(signal.SIGINT)
        s.wait(timeout=30)
        p.send_signal(signal.SIGCONT)
        calls = {}
        for line in open(out).read().splitlines():
            m = re.match(r"\s*[\d.]+\s+[\d.]+\s+\d+\s+(\d+)\s+(?:\d+\s+)?(\w+)\s*$", line)
            if m and m.group(2) != "total":
                calls[m.group(2)] = int(m.group(1))
        return calls, took

    busy, took = traced(lambda: drive(port, n))
    idle, _ = traced(lambda: time.sleep(took))
    stop(p, cand)
    shutil.rmtree(tmp, ignore_errors=True)
    return {k: (v - idle.get(k, 0)) / n for k, v in busy.items()}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--only", choices=["vertex-proxy", "nginx", "nginx+log"], action="append")
    ap.add_argument("--keep", metavar="DIR")
    args = ap.parse_args()
    global KEEP
    KEEP = args.keep
    if KEEP:
        os.makedirs(KEEP, exist_ok=True)
    up = free_port()
    upstream = subprocess.Popen(["bash", os.path.join(FILES, "start.sh"), str(up)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        if not wait_port(up):
            raise SystemExit("fake upstream did not start")
        result = {}
        for cand in args.only or ("vertex-proxy", "nginx", "nginx+log"):
            ins = (instructions(cand, args.requests, up) - instructions(cand, 0, up)) / args.requests
            calls = syscalls(cand, args.requests, up)
            row = {"callgrind": ins, "strace": sum(calls.values()),
                   "syscalls": {k: round(v, 2) for k, v in sorted(calls.items(), key=lambda kv: -kv[1]) if v >= 0.05}}
            result[cand] = row
            print("%-13s %8.1f k instructions/request  %5.2f syscalls/request  %s"
                  % (cand, row["callgrind"] / 1000, row["strace"], row["syscalls"]), file=sys.stderr, flush=True)
        if len(result) < 3:
            if args.json:
                print(json.dumps(result))
            return
        vp, ng = result["vertex-proxy"], result["nginx"]
        print("instructions vs nginx: %.2fx; vs nginx with an access log: %.2fx; syscalls vs nginx: %.2fx; vs nginx+log: %.2fx"
              % (vp["callgrind"] / ng["callgrind"], vp["callgrind"] / result["nginx+log"]["callgrind"],
                 vp["strace"] / ng["strace"], vp["strace"] / result["nginx+log"]["strace"]))
        if args.json:
            print(json.dumps(result))
    finally:
        for p in STARTED:  # whatever a failure left running
            if p.poll() is None:
                p.kill()
                p.wait()
        upstream.send_signal(signal.SIGTERM)
        upstream.wait(timeout=10)


if __name__ == "__main__":
    main()
