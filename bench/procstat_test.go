package main

import (
	"testing"
	"time"
)

func TestParseStat(t *testing.T) {
	tests := []struct {
		name       string
		in         string
		user, sys  time.Duration
		wantErrors bool
	}{
		{
			name: "caddy",
			in:   "4242 (caddy) S 4200 4242 4200 0 -1 4194560 12345 0 0 0 1234 567 0 0 20 0 9 0 123456 1404633088 12000 18446744073709551615 1 1 0 0 0 0 0 0 2143420159 0 0 0 17 1 0 0 0 0 0",
			user: 12340 * time.Millisecond,
			sys:  5670 * time.Millisecond,
		},
		{
			name: "command with spaces and parentheses",
			in:   "7 (a (b) c) R 1 7 7 0 -1 0 0 0 0 0 3 4 0 0 20 0 1 0 99 0 0",
			user: 30 * time.Millisecond,
			sys:  40 * time.Millisecond,
		},
		{name: "truncated", in: "7 (x) R 1 7 7 0", wantErrors: true},
		{name: "no command", in: "7 x R 1 2 3", wantErrors: true},
		{name: "not a number", in: "7 (x) R 1 7 7 0 -1 0 0 0 0 0 x 4 0", wantErrors: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseStat([]byte(tt.in))
			if tt.wantErrors {
				if err == nil {
					t.Fatalf("got %+v, want an error", got)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got.User != tt.user || got.System != tt.sys {
				t.Errorf("got user %s system %s; want %s %s", got.User, got.System, tt.user, tt.sys)
			}
		})
	}
}

func TestParseStatus(t *testing.T) {
	in := "Name:\tcaddy\nVmPeak:\t 1500000 kB\nVmHWM:\t   60000 kB\nVmRSS:\t   51200 kB\nThreads:\t9\n"
	got, err := parseStatus([]byte(in))
	if err != nil {
		t.Fatal(err)
	}
	if got.Peak != 60000*1024 || got.RSS != 51200*1024 {
		t.Errorf("got %+v; want peak 60000 KiB and rss 51200 KiB", got)
	}
	if _, err := parseStatus([]byte("Name:\tkthreadd\n")); err == nil {
		t.Error("a kernel thread's status: got no error")
	}
}

func TestParseSystemStat(t *testing.T) {
	in := "cpu  100 5 50 9000 20 3 2 7 0 0\ncpu0 50 2 25 4500 10 1 1 3 0 0\n"
	got, err := parseSystemStat([]byte(in))
	if err != nil {
		t.Fatal(err)
	}
	if want := 160 * 10 * time.Millisecond; got.Busy != want {
		t.Errorf("busy %s; want %s", got.Busy, want)
	}
	if want := 70 * time.Millisecond; got.Steal != want {
		t.Errorf("steal %s; want %s", got.Steal, want)
	}
}

func TestReadOwnProcess(t *testing.T) {
	if _, err := readCPU("self"); err != nil {
		t.Fatal(err)
	}
	m, err := readMemory("self")
	if err != nil {
		t.Fatal(err)
	}
	if m.RSS == 0 || m.Peak < m.RSS {
		t.Errorf("got %+v; want 0 < RSS ≤ peak", m)
	}
}
