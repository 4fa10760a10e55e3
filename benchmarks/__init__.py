"""Benchmarks: `make bench` (python -m benchmarks) prints a table and writes JSON.

Timings are medians over repeated runs, with a baseline measured in the same run
(these machines are shared and noisy).  Nothing here is a test: no thresholds.

The four scenarios of the performance issue (``--quick`` for a smoke run):

* ``decode``: our DsmrDecoder against dsmr_parser on the same telegrams, as a
  realistic stream (distinct simulator telegrams one second apart, one
  decoder), cold (a fresh decoder per telegram) and repeated (one capture
  over and over: every line a cache hit, the best case);
* ``latency``: last byte written to a pty to the state message at a
  subscriber through mosquitto, next to a plain paho publish through the same
  broker; and what the COMMIT before publishing costs (store append with
  synchronous=FULL against NORMAL);
* ``throughput``: sustained telegrams a second from many P1 streams over TCP
  into MQTT, the gateway pinned to one core; every telegram sent must reach
  the subscriber (``undelivered``), as live state or as history;
* ``resources``: CPU share and RSS of the daemon at one telegram a second,
  next to the same daemon with per-quantity topics on change and an idle one.

``benchmarks/results/latest.json`` also records the machine's load average
before and after each scenario.
"""
