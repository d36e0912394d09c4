package authcore

import (
	"sync"
	"sync/atomic"
)

// A Watch tells its holder, on C, that a session may have changed: it
// ended, or its user changed (disabled, deleted, signed out everywhere,
// new groups, a second factor enrolled), through this Service. C is
// buffered: changes while nobody reads it come as one. Nothing is sent
// for a session merely reaching its end of life; the holder checks that
// itself (Recheck).
//
// The gate holds one for each WebSocket and event stream it let
// through, to close it when its session ends.
type Watch struct {
	C <-chan struct{}

	c    chan struct{}
	set  *watchSet
	id   SessionID
	user string
}

// watchSet is the Service's watches, by session and by user.
type watchSet struct {
	n         atomic.Int64 // how many: drops skip the lock when none
	mu        sync.Mutex
	bySession map[SessionID]map[*Watch]struct{}
	byUser    map[string]map[*Watch]struct{}
}

// WatchSession returns a Watch of session id of user userID. Stop it
// when done.
func (s *Service) WatchSession(id SessionID, userID string) *Watch {
	c := make(chan struct{}, 1)
	w := &Watch{C: c, c: c, set: &s.cache.watch, id: id, user: userID}
	ws := w.set
	ws.mu.Lock()
	if ws.bySession == nil {
		ws.bySession = make(map[SessionID]map[*Watch]struct{})
		ws.byUser = make(map[string]map[*Watch]struct{})
	}
	add(ws.bySession, id, w)
	add(ws.byUser, userID, w)
	ws.n.Add(1)
	ws.mu.Unlock()
	return w
}

// Stop ends the watch. It may be called more than once.
func (w *Watch) Stop() {
	ws := w.set
	ws.mu.Lock()
	if _, ok := ws.bySession[w.id][w]; ok {
		remove(ws.bySession, w.id, w)
		remove(ws.byUser, w.user, w)
		ws.n.Add(-1)
	}
	ws.mu.Unlock()
}

func add[K comparable](m map[K]map[*Watch]struct{}, k K, w *Watch) {
	set := m[k]
	if set == nil {
		set = make(map[*Watch]struct{}, 1)
		m[k] = set
	}
	set[w] = struct{}{}
}

func remove[K comparable](m map[K]map[*Watch]struct{}, k K, w *Watch) {
	delete(m[k], w)
	if len(m[k]) == 0 {
		delete(m, k)
	}
}

// Changes counts the changes this Service was told of: every session
// ended and every user changed, through it or a peer, adds to it. A
// holder of a principal that reads the same count later knows that
// nothing it holds was changed meanwhile (it may have ended by time).
func (s *Service) Changes() uint64 { return s.cache.gen.Load() }

// WakeWatches tells every watch: the Service is being replaced (a new
// config), and holders should watch through its successor.
func (s *Service) WakeWatches() {
	ws := &s.cache.watch
	ws.mu.Lock()
	for _, set := range ws.bySession {
		notify(set)
	}
	ws.mu.Unlock()
}

// session tells the watches of session id.
func (ws *watchSet) session(id SessionID) {
	if ws.n.Load() == 0 {
		return
	}
	ws.mu.Lock()
	notify(ws.bySession[id])
	ws.mu.Unlock()
}

// user tells the watches of every session of userID.
func (ws *watchSet) user(userID string) {
	if ws.n.Load() == 0 {
		return
	}
	ws.mu.Lock()
	notify(ws.byUser[userID])
	ws.mu.Unlock()
}

func notify(set map[*Watch]struct{}) {
	for w := range set {
		select {
		case w.c <- struct{}{}:
		default: // one is waiting already
		}
	}
}
