package audit

import (
	"sync"
	"sync/atomic"
)

// DefaultSubscriptionBuffer is the channel buffer Subscribe uses when asked
// for none.
const DefaultSubscriptionBuffer = 256

// Subscription is an in-process tap on recorded rows. Read rows from C.
// Rows arrive in commit order. The recording path never waits for a
// subscriber: when C's buffer is full the row is dropped for this
// subscriber and counted (Dropped). C is closed by Close and by the Log's
// Close.
type Subscription struct {
	// C receives the matching rows.
	C <-chan Row

	c        chan Row
	patterns []Pattern
	dropped  atomic.Uint64
	log      *Log
	once     sync.Once
}

// Subscribe taps the rows whose action matches one of patterns (see
// Pattern: "auth.*", "mfa.*", an exact name, "*"; no patterns means all).
// buffer is C's capacity; 0 or less means DefaultSubscriptionBuffer. After
// Close of the Log, Subscribe returns a subscription whose C is closed.
func (l *Log) Subscribe(patterns []string, buffer int) (*Subscription, error) {
	ps, err := ParsePatterns(patterns)
	if err != nil {
		return nil, err
	}
	if len(ps) == 0 {
		ps = []Pattern{"*"}
	}
	if buffer <= 0 {
		buffer = DefaultSubscriptionBuffer
	}
	s := &Subscription{c: make(chan Row, buffer), patterns: ps, log: l}
	s.C = s.c
	l.closeMu.RLock()
	defer l.closeMu.RUnlock()
	l.subMu.Lock()
	defer l.subMu.Unlock()
	if l.closed {
		close(s.c)
		s.once.Do(func() {})
		return s, nil
	}
	l.subs[s] = struct{}{}
	return s, nil
}

// Dropped counts rows this subscriber missed because C was full.
func (s *Subscription) Dropped() uint64 { return s.dropped.Load() }

// Close stops the subscription and closes C. Rows still buffered in C can
// be read. Close is idempotent.
func (s *Subscription) Close() {
	s.once.Do(func() {
		s.log.subMu.Lock()
		defer s.log.subMu.Unlock()
		if _, ok := s.log.subs[s]; ok {
			delete(s.log.subs, s)
			close(s.c)
		}
	})
}

// publish offers r to every matching subscriber without blocking.
func (l *Log) publish(r Row) {
	l.subMu.RLock()
	defer l.subMu.RUnlock()
	for s := range l.subs {
		if !matchAny(s.patterns, r.Action) {
			continue
		}
		select {
		case s.c <- r:
		default:
			s.dropped.Add(1)
			l.dropped.Add(1)
		}
	}
}
