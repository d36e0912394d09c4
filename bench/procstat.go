package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

// clockTicks is USER_HZ, the unit of utime and stime in /proc/<pid>/stat.
// The kernel reports it as 100 on every Linux architecture Go supports
// (sysconf(_SC_CLK_TCK)); it is not the scheduler's HZ.
const clockTicks = 100

// cpuTime is the CPU a process has used so far, user plus system, summed
// over all its threads.
type cpuTime struct {
	User, System time.Duration
}

// Total is user plus system time.
func (c cpuTime) Total() time.Duration { return c.User + c.System }

// Sub returns the CPU used between an earlier reading and c.
func (c cpuTime) Sub(earlier cpuTime) cpuTime {
	return cpuTime{User: c.User - earlier.User, System: c.System - earlier.System}
}

// readCPU reads utime and stime of pid ("self" works too).
func readCPU(pid string) (cpuTime, error) {
	b, err := os.ReadFile("/proc/" + pid + "/stat")
	if err != nil {
		return cpuTime{}, err
	}
	return parseStat(b)
}

// parseStat extracts utime and stime from the contents of /proc/<pid>/stat.
// The second field, the command name, is in parentheses and may itself
// contain spaces and parentheses, so the fields are counted from the last
// ')': after it come field 3 (state) onwards, and utime and stime are
// fields 14 and 15 (proc(5)).
func parseStat(b []byte) (cpuTime, error) {
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return cpuTime{}, errors.New("/proc stat: no ')' after the command name")
	}
	f := strings.Fields(string(b[i+1:]))
	const utimeIdx = 14 - 3 // f[0] is field 3
	if len(f) <= utimeIdx+1 {
		return cpuTime{}, fmt.Errorf("/proc stat: %d fields after the command name, want more than %d", len(f), utimeIdx+1)
	}
	ut, err := strconv.ParseUint(f[utimeIdx], 10, 64)
	if err != nil {
		return cpuTime{}, fmt.Errorf("/proc stat: utime: %w", err)
	}
	st, err := strconv.ParseUint(f[utimeIdx+1], 10, 64)
	if err != nil {
		return cpuTime{}, fmt.Errorf("/proc stat: stime: %w", err)
	}
	tick := time.Second / clockTicks
	return cpuTime{User: time.Duration(ut) * tick, System: time.Duration(st) * tick}, nil
}

// memory is what /proc/<pid>/status says about resident memory, in bytes.
type memory struct {
	RSS  uint64 // VmRSS: resident now
	Peak uint64 // VmHWM: the high-water mark since start or the last resetPeakRSS
}

// readMemory reads VmRSS and VmHWM of pid.
func readMemory(pid string) (memory, error) {
	b, err := os.ReadFile("/proc/" + pid + "/status")
	if err != nil {
		return memory{}, err
	}
	return parseStatus(b)
}

// parseStatus extracts VmRSS and VmHWM ("VmHWM:    12345 kB") from the
// contents of /proc/<pid>/status.
func parseStatus(b []byte) (memory, error) {
	var m memory
	var seen int
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		name, rest, ok := strings.Cut(sc.Text(), ":")
		if !ok || (name != "VmRSS" && name != "VmHWM") {
			continue
		}
		f := strings.Fields(rest)
		if len(f) != 2 || f[1] != "kB" {
			return memory{}, fmt.Errorf("/proc status: %s: unexpected value %q", name, rest)
		}
		kb, err := strconv.ParseUint(f[0], 10, 64)
		if err != nil {
			return memory{}, fmt.Errorf("/proc status: %s: %w", name, err)
		}
		if name == "VmRSS" {
			m.RSS = kb * 1024
		} else {
			m.Peak = kb * 1024
		}
		seen++
	}
	if seen != 2 {
		return memory{}, errors.New("/proc status: VmRSS or VmHWM missing (kernel threads have neither)")
	}
	return m, nil
}

// resetPeakRSS sets pid's VmHWM back to its current RSS (writing 5 to
// /proc/<pid>/clear_refs, Linux ≥ 4.0), so the peak read after a round
// belongs to that round. It needs to own the process, which the harness
// does: it started it.
func resetPeakRSS(pid string) error {
	return os.WriteFile("/proc/"+pid+"/clear_refs", []byte("5"), 0)
}

// systemCPU is the machine-wide CPU time from the first line of /proc/stat.
type systemCPU struct {
	Busy  time.Duration // user, nice, system, irq and softirq of all CPUs (guest time is inside user)
	Steal time.Duration // taken by the hypervisor for other guests
}

// readSystemCPU reads /proc/stat.
func readSystemCPU() (systemCPU, error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return systemCPU{}, err
	}
	return parseSystemStat(b)
}

// parseSystemStat parses the "cpu" line of /proc/stat:
// cpu user nice system idle iowait irq softirq steal guest guest_nice.
func parseSystemStat(b []byte) (systemCPU, error) {
	line, _, _ := bytes.Cut(b, []byte("\n"))
	f := strings.Fields(string(line))
	if len(f) < 9 || f[0] != "cpu" {
		return systemCPU{}, fmt.Errorf("/proc/stat: unexpected first line %q", line)
	}
	var v [8]uint64
	for i := range v {
		n, err := strconv.ParseUint(f[i+1], 10, 64)
		if err != nil {
			return systemCPU{}, fmt.Errorf("/proc/stat: field %d: %w", i+1, err)
		}
		v[i] = n
	}
	tick := time.Second / clockTicks
	busy := v[0] + v[1] + v[2] + v[5] + v[6]
	return systemCPU{Busy: time.Duration(busy) * tick, Steal: time.Duration(v[7]) * tick}, nil
}
