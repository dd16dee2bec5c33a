"""Formats one stage-alone run of bench/ab/stage.sh: the JSON line of `stream --drain` and
/usr/bin/time's user and system seconds."""
import json, sys
j = json.loads(sys.argv[1])
u, s = map(float, sys.argv[2].split()[1:])
r = j["records"]
print(f"{sys.argv[3]} run {sys.argv[4]}: {r} records, decode thread {r / j['process_cpu_seconds']:,.0f}/CPU-s, process {r / (u + s):,.0f}/CPU-s")
