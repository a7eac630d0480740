# pressured in a container: a sidecar (shared PID namespace) or a node agent (hostPID).
#
#   docker build -t pressured .
#   docker run --rm --pid=host --cgroupns=host -v /sys/fs/cgroup:/sys/fs/cgroup \
#       --cap-add KILL --cap-add SYS_RESOURCE --cap-add IPC_LOCK --cap-add SYS_PTRACE \
#       --cap-add SYS_NICE --ulimit memlock=-1 -p 127.0.0.1:19464:19464 pressured
#
# It runs as root on purpose: it must signal, and read /proc of, processes of other users.
# Root alone is not enough and not everything: the capabilities it uses are
#   KILL          signal processes of other users (pidfd_send_signal)
#   SYS_RESOURCE  PSI trigger windows under 2 s, and oom_score_adj -1000 for itself
#   IPC_LOCK      mlockall(), so the daemon itself never stalls in reclaim
#   SYS_PTRACE    read /proc/<pid>/smaps_rollup of other users' processes
#   SYS_NICE      renice a dying victim to -20 when process_mrelease lost the race
# Docker's default set already has KILL; add the others with --cap-add. It does not need
# --privileged. Without SYS_RESOURCE it still works, with 2 s trigger windows (it says so).

# --- build: a wheel from the build context (no compiler needed: pure Python) --------------
FROM python:3.11-slim AS build
WORKDIR /src
COPY . .
RUN pip wheel --no-cache-dir --disable-pip-version-check --no-deps --wheel-dir /wheels .

# --- runtime ------------------------------------------------------------------------------
FROM python:3.11-slim
# The container has its own network namespace: bind all its addresses so a published port or
# a Kubernetes probe reaches /metrics and /healthz (the environment overrides the file).
# Publish the port deliberately, e.g. on 127.0.0.1 only.
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PRESSURED_METRICS__HOST=0.0.0.0
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir --disable-pip-version-check /wheels/*.whl && rm -rf /wheels
COPY examples/systemd/pressured.toml /etc/pressured/pressured.toml
EXPOSE 19464
HEALTHCHECK --interval=15s --timeout=3s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import urllib.request as u; u.urlopen('http://127.0.0.1:19464/healthz', timeout=2)"]
ENTRYPOINT ["pressured", "run"]
CMD ["--config", "/etc/pressured/pressured.toml"]
