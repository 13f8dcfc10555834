#!/bin/sh
# SPDX-License-Identifier: MIT OR Apache-2.0
# /init of the VM-test guest (cargo xtask vm builds the initramfs around it).
#
# Results go to the second serial port (/dev/ttyS1, a file on the host), one line per
# test: "KSIGHT-VM <test> PASS|FAIL [detail]", then "KSIGHT-VM DONE failed=<n>"; the
# guest then leaves qemu through isa-debug-exit with the number of failures.
# Everything also goes to the console (ttyS0).

export PATH=/usr/local/bin:/bin:/sbin:/usr/bin:/usr/sbin
/bin/busybox --install -s
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /tmp /sys/fs/cgroup /sys/kernel/tracing /sys/fs/bpf
mount -t tmpfs tmpfs /tmp
mount -t cgroup2 cgroup2 /sys/fs/cgroup
mount -t tracefs tracefs /sys/kernel/tracing
mount -t bpf bpf /sys/fs/bpf
ip link set lo up

OUT=/dev/ttyS1
KERNEL=$(uname -r)
MODULE=/lib/ksight/ksight.ko
SENT=100000
RECEIVED=30000
FAILED=0
# Retransmitted TCP segments, as the kernel counts them.
retrans_segs() { awk '/^Tcp:/ { if (!c) { for (i = 1; i <= NF; i++) if ($i == "RetransSegs") c = i } else print $c }' /proc/net/snmp; }

say() { echo "$*"; echo "$*" > $OUT; }
result() { say "KSIGHT-VM $*"; }
uptime_s() { cut -d' ' -f1 /proc/uptime; }

# run NAME CMD...: runs CMD, copies its output to both ports, records PASS/FAIL.
run() {
	name=$1
	shift
	t0=$(uptime_s)
	"$@" > /tmp/$name.log 2>&1
	rc=$?
	# A test that failed half-way must not leave the module loaded for the next one.
	rmmod ksight 2>/dev/null
	t1=$(uptime_s)
	sed "s/^/[$name] /" /tmp/$name.log | tee $OUT
	secs=$(awk "BEGIN { printf \"%.1f\", $t1 - $t0 }")
	if [ $rc -eq 0 ]; then
		result "$name PASS ${secs}s"
	else
		result "$name FAIL ${secs}s (exit $rc)"
		FAILED=$((FAILED + 1))
	fi
	return $rc
}

finish() {
	# No oops, warning or leak report anywhere in the run.
	dmesg > /tmp/dmesg.txt
	if grep -E "Oops|BUG[: ]|WARNING:|Call Trace|general protection|kmemleak|refcount_t|list_del corruption|Bad page|ksight.*(error|cannot)" /tmp/dmesg.txt > /tmp/dmesg-bad.txt; then
		sed "s/^/[dmesg] /" /tmp/dmesg-bad.txt | tee $OUT
		result "dmesg FAIL"
		FAILED=$((FAILED + 1))
	else
		result "dmesg PASS no oops, warning or leak report"
	fi
	grep ksight /tmp/dmesg.txt | tail -n 8 | sed "s/^/[dmesg] /" | tee $OUT
	result "DONE failed=$FAILED kernel=$KERNEL"
	sync
	# isa-debug-exit: qemu exits with 2 * FAILED + 1.
	printf "\\$(printf '%03o' $FAILED)" | dd of=/dev/port bs=1 seek=244 count=1 2>/dev/null
	poweroff -f
}

say "guest: kernel $KERNEL, $(grep -c ^processor /proc/cpuinfo) CPUs, up $(uptime_s)s"

insmod /lib/ksight/loop.ko 2>/dev/null
dd if=/dev/zero of=/tmp/disk.img bs=1M count=16 2>/dev/null
losetup /dev/loop0 /tmp/disk.img || say "guest: no loop device"

# Bad input first: parameters that must refuse the load, naming the parameter.
params() {
	for bad in 5000 1024 0; do
		if insmod $MODULE ring_bytes=$bad 2>/dev/null; then
			echo "ring_bytes=$bad was accepted"
			rmmod ksight
			return 1
		fi
		dmesg | grep -q "ring_bytes=$bad is invalid" || { echo "no message naming ring_bytes=$bad"; return 1; }
		echo "ring_bytes=$bad refused: $(dmesg | grep "ring_bytes=$bad is invalid" | tail -n 1)"
	done
}
run params params

# (a) the ground-truth workload through the module alone.
ground_truth() {
	insmod $MODULE || return 1
	kmod-vm busy || return 1
	kmod-vm stat --backend kmod -o /tmp/a.json -- ksight-workload all $SENT $RECEIVED /dev/loop0 || return 1
	kmod-vm truth /tmp/a.json /dev/loop0 $SENT $RECEIVED || return 1
	r0=$(retrans_segs)
	ksight stat --backend kmod --json -o /tmp/a-cli.json -- ksight-workload all $SENT $RECEIVED /dev/loop0 || return 1
	kmod-vm truth /tmp/a-cli.json /dev/loop0 $SENT $RECEIVED $(( $(retrans_segs) - r0 )) || return 1
	rmmod ksight
}
run ground_truth ground_truth

# Every signal observed in full by the eBPF backend on this kernel; otherwise the notes
# say which and why (a verifier refusal ends with the verifier's own words).
ebpf_fidelity() {
	ksight stat --backend ebpf -- /bin/true > /tmp/fidelity.txt 2>&1
	cat /tmp/fidelity.txt
	! grep -Eq "unavailable|degraded" /tmp/fidelity.txt
}
run ebpf_fidelity ebpf_fidelity

# (b) both backends capture the same run at once; the per-event cost of each.
parity() {
	insmod $MODULE probe_timing=1 || return 1
	kmod-vm stat --backend both --costs -o /tmp/b.json -- ksight-workload all $SENT $RECEIVED /dev/loop0
	rc=$?
	rmmod ksight
	return $rc
}
run parity parity

# Requests parsed from socket payload (HTTP/1.1, Redis, PostgreSQL, both ends in
# `ksight-workload requests`): both backends at once agree on every aggregate, and each
# backend's snapshot reports exactly the workload's requests, bytes and edges.
requests_parity() {
	insmod $MODULE || return 1
	kmod-vm stat --backend both -o /tmp/requests.json -- ksight-workload requests
	rc=$?
	rmmod ksight
	kmod-vm requests-truth /tmp/requests.json || rc=1
	return $rc
}
run requests_parity requests_parity

# (b, as users run it) `ksight verify`: the built-in workload under both backends.
verify() {
	insmod $MODULE || return 1
	ksight verify --device /dev/loop0 > /tmp/verify.log 2>&1
	rc=$?
	grep -E "^records:|^metrics:|DIFFERENT|unmatched|backends" /tmp/verify.log
	rmmod ksight
	return $rc
}
run verify verify

# The agent picks its backend itself: with eBPF allowed it takes eBPF; with bpf() denied
# by a seccomp filter it falls back to the loaded module, and serves the same metric
# families either way.
agent_scrape() { # $1: output file
	for i in $(seq 120); do
		wget -q -O "$1" http://127.0.0.1:9464/metrics 2>/dev/null && return 0
		sleep 0.5
	done
	return 1
}
agent_fallback() {
	insmod $MODULE || return 1
	printf 'backend = "auto"\n[prometheus]\nlisten = "127.0.0.1:9464"\n[socket]\npath = "/tmp/ksight.sock"\n' > /tmp/agent.toml
	for mode in ebpf kmod; do
		if [ $mode = ebpf ]; then
			ksight agent --config /tmp/agent.toml > /tmp/agent-$mode.log 2>&1 &
		else
			ksight-workload deny-bpf ksight agent --config /tmp/agent.toml > /tmp/agent-$mode.log 2>&1 &
		fi
		pid=$!
		agent_scrape /tmp/metrics-$mode.txt || { echo "no /metrics from the $mode agent"; cat /tmp/agent-$mode.log; kill $pid; rmmod ksight; return 1; }
		kill -TERM $pid
		wait $pid || { echo "the $mode agent did not stop cleanly"; cat /tmp/agent-$mode.log; rmmod ksight; return 1; }
		grep "^ksight_backend_info{" /tmp/metrics-$mode.txt
		grep -q "^ksight_backend_info{.*backend=\"$mode\"" /tmp/metrics-$mode.txt || { echo "the agent did not choose $mode"; cat /tmp/agent-$mode.log; rmmod ksight; return 1; }
		grep "^# TYPE ksight_" /tmp/metrics-$mode.txt | sort > /tmp/families-$mode.txt
	done
	grep -i "seccomp\|bpf" /tmp/agent-kmod.log | head -n 3
	rmmod ksight
	echo "metric families: $(wc -l < /tmp/families-ebpf.txt) with eBPF, $(wc -l < /tmp/families-kmod.txt) with the module"
	diff /tmp/families-ebpf.txt /tmp/families-kmod.txt || { echo "metric families differ"; return 1; }
}
run agent_fallback agent_fallback

# The cgroup ignore filter pushed into both kernels at once: an ignored cgroup's records
# never arrive from either, each counts them filtered, the records stay identical, and
# clearing the set at run time brings them back; the module's own checks of the ioctl
# (EINVAL, EFAULT, the set kept after a refusal), the set cleared on close, and the
# interface-1.0 stats ioctl.
filter_check() {
	insmod $MODULE || return 1
	kmod-vm filter 20000 3000
	rc=$?
	rmmod ksight
	return $rc
}
run filter filter_check

# Socket I/O against a workload whose every call is known (TCP and UDP, IPv4 and IPv6,
# every traced call, mmsg past its record limit, sendfile, splice; files and pipes that
# must record nothing): through the module alone at the default snaplen and at the
# largest, then not selected (no probe registered) and selected during a capture.
sockio_check() {
	insmod $MODULE || return 1
	kmod-vm sockio --backend kmod && kmod-vm sockio --backend kmod --snaplen 4096
	rc=$?
	rmmod ksight
	return $rc
}
run sockio sockio_check

# The same workload captured by both backends at once: the socket records byte-identical
# but for ts_ns and duration_ns.
sockio_parity() {
	insmod $MODULE || return 1
	kmod-vm sockio --backend both
	rc=$?
	rmmod ksight
	return $rc
}
run sockio_parity sockio_parity

# Per-event kernel-side cost of both backends on more events (guest timings are emulated:
# only the ratio means anything); the run must be at parity too.
cost() {
	insmod $MODULE probe_timing=1 || return 1
	kmod-vm stat --backend both --costs -o /tmp/cost.json -- ksight-workload connect-loop 300 > /tmp/cost-full.log
	rc=$?
	grep -E "^COST|^records:|^parity:|DIFFERENT|unmatched" /tmp/cost-full.log
	rmmod ksight
	return $rc
}
run cost cost

# (c) load and unload 20 times while events flow; unload refused while a reader is open.
cycles() {
	# Page cache and slab come and go with the load; only what is left after dropping
	# them can be a leak.
	sync; echo 3 > /proc/sys/vm/drop_caches
	avail0=$(awk '/MemAvailable/ { print $2 }' /proc/meminfo)
	vmap0=$(grep -c vmap /proc/vmallocinfo)
	(while :; do /bin/true; done) &
	load1=$!
	ksight-workload connect-loop 1000000 > /dev/null 2>&1 &
	load2=$!
	i=1
	while [ $i -le 20 ]; do
		insmod $MODULE || { echo "cycle $i: insmod failed"; return 1; }
		kmod-vm hold 0.3 > /tmp/hold.log 2>&1 || { cat /tmp/hold.log; return 1; }
		if [ $((i % 5)) -eq 0 ]; then
			kmod-vm hold 30 > /dev/null 2>&1 &
			holder=$!
			sleep 1
			if rmmod ksight 2> /tmp/rmmod.log; then
				echo "cycle $i: rmmod succeeded while a reader had the device open"
				return 1
			fi
			echo "cycle $i: rmmod while open refused: $(cat /tmp/rmmod.log)"
			# A reader that dies with the capture running.
			kill -9 $holder
			wait $holder 2>/dev/null
		fi
		rmmod ksight || { echo "cycle $i: rmmod failed"; return 1; }
		echo "cycle $i: $(cat /tmp/hold.log)"
		i=$((i + 1))
	done
	kill $load1 $load2
	wait $load1 $load2 2>/dev/null
	sync; echo 3 > /proc/sys/vm/drop_caches
	avail1=$(awk '/MemAvailable/ { print $2 }' /proc/meminfo)
	vmap1=$(grep -c vmap /proc/vmallocinfo)
	echo "MemAvailable ${avail0} kB -> ${avail1} kB; vmap areas $vmap0 -> $vmap1"
	# 20 leaked pairs of 1 MiB rings would be 40 MiB and 40 vmap areas.
	[ $((avail0 - avail1)) -lt 16384 ] || { echo "memory not returned"; return 1; }
	[ $((vmap1 - vmap0)) -lt 8 ] || { echo "vmap areas not returned"; return 1; }
}
run cycles cycles

# (d) tiny rings, flooded.
flood() {
	insmod $MODULE ring_bytes=4096 || return 1
	kmod-vm flood 3
	rc=$?
	rmmod ksight
	return $rc
}
run flood flood

finish
