package store

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/sigra-auth/caddy-sigra/authcore"
	"github.com/sigra-auth/caddy-sigra/internal/clock"
	"github.com/sigra-auth/caddy-sigra/internal/ids"
	"github.com/sigra-auth/caddy-sigra/internal/seal"
)

var authT0 = time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)

var authCheapArgon2 = authcore.Argon2Params{Memory: 64, Time: 1, Threads: 1, KeyLen: 32, SaltLen: 16}

const authPassword = "correct horse battery"

func openAuthBolt(t *testing.T) *Bolt {
	t.Helper()
	st, err := OpenBolt(filepath.Join(t.TempDir(), "sigra.db"), BoltOptions{})
	if err != nil {
		t.Fatalf("OpenBolt: %v", err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

// reopenBolt closes st and opens its file again, as a restart does.
func reopenBolt(t *testing.T, st *Bolt) *Bolt {
	t.Helper()
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	st, err := OpenBolt(st.Path(), BoltOptions{})
	if err != nil {
		t.Fatalf("OpenBolt again: %v", err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

func authBox(t *testing.T, fill byte) *seal.Box {
	t.Helper()
	box, err := seal.New(bytes.Repeat([]byte{fill}, 32))
	if err != nil {
		t.Fatal(err)
	}
	return box
}

// authNewUser is a valid user record that is not stored yet.
func authNewUser(email string) *authcore.User {
	return &authcore.User{
		ID: ids.New(), Email: email, Name: "Test " + email, Groups: []string{"dev"},
		CreatedAt: authT0, UpdatedAt: authT0,
	}
}

func authCreate(t *testing.T, st *Bolt, email string) *authcore.User {
	t.Helper()
	u := authNewUser(email)
	if err := st.CreateUser(context.Background(), u); err != nil {
		t.Fatalf("CreateUser(%s): %v", email, err)
	}
	return u
}

// authSetEmail changes a user's email through UpdateUser.
func authSetEmail(st *Bolt, id, email string) error {
	_, err := st.UpdateUser(context.Background(), id, false, func(u *authcore.User) error { u.Email = email; return nil })
	return err
}

// authNewSession is a session of userID created at created, not stored yet.
func authNewSession(userID string, created time.Time) *authcore.Session {
	_, id := authcore.NewToken()
	return &authcore.Session{
		ID: id, UserID: userID, CreatedAt: created, LastSeen: created, ExpiresAt: created.Add(12 * time.Hour),
		AuthTime: created, AMR: []string{authcore.AMRPassword}, IP: "192.0.2.1", UserAgent: "test",
	}
}

func authPutSession(t *testing.T, st *Bolt, s *authcore.Session) {
	t.Helper()
	if err := st.PutSession(context.Background(), s); err != nil {
		t.Fatalf("PutSession: %v", err)
	}
}

// authJSON is the stored form of v, to compare records field by field.
func authJSON(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func authIDs(ss []*authcore.Session) []authcore.SessionID {
	var out []authcore.SessionID
	for _, s := range ss {
		out = append(out, s.ID)
	}
	return authSortIDs(out)
}

func authSortIDs(ids []authcore.SessionID) []authcore.SessionID {
	ids = slices.Clone(ids)
	slices.SortFunc(ids, func(a, b authcore.SessionID) int { return bytes.Compare(a[:], b[:]) })
	return ids
}

// authIndexed lists the session ids in the sessions_by_user index for a user.
func authIndexed(t *testing.T, st *Bolt, userID string) []authcore.SessionID {
	t.Helper()
	uk, ok := userKey(userID)
	if !ok {
		t.Fatalf("user id %q is not a UUID", userID)
	}
	var ids []authcore.SessionID
	if err := st.db.View(func(tx *bolt.Tx) error {
		ids = userSessionIDs(tx, uk)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return authSortIDs(ids)
}

// authCheckIndexes fails unless the secondary indexes agree exactly with
// the primary buckets: every session has its sessions_by_user entry and
// every entry points at a session of that user; every user has its email
// entry and every email entry points at a user with that email.
func authCheckIndexes(t *testing.T, st *Bolt) {
	t.Helper()
	err := st.db.View(func(tx *bolt.Tx) error {
		sessions := bucket(tx, bktSessions)
		byUser := bucket(tx, bktSessionsByUser)
		n := 0
		if err := sessions.ForEach(func(k, v []byte) error {
			n++
			s, err := decodeSession(v)
			if err != nil {
				return err
			}
			uk, _ := userKey(s.UserID)
			if byUser.Get(sessionUserKey(uk, s.ID)) == nil {
				t.Errorf("session %s of user %s has no sessions_by_user entry", s.ID, s.UserID)
			}
			for _, ix := range sessionIndexes {
				at := ix.at(sessionTimesOf(s))
				if bucket(tx, ix.name).Get(timeKey(at, s.ID)) == nil {
					t.Errorf("session %s has no %s entry for %v", s.ID, ix.name, at)
				}
			}
			return nil
		}); err != nil {
			return err
		}
		// One entry per session, so none is left over.
		for _, ix := range sessionIndexes {
			if m := bucket(tx, ix.name).Stats().KeyN; m != n {
				t.Errorf("%d sessions but %d %s entries", n, m, ix.name)
			}
		}
		m := 0
		if err := byUser.ForEach(func(k, _ []byte) error {
			m++
			var id authcore.SessionID
			copy(id[:], k[16:])
			v := sessions.Get(id[:])
			if v == nil {
				t.Errorf("sessions_by_user entry %x points at missing session %s", k, id)
				return nil
			}
			s, _ := decodeSession(v)
			if uk, _ := userKey(s.UserID); !bytes.Equal(uk, k[:16]) {
				t.Errorf("sessions_by_user entry %x is under the wrong user (session belongs to %s)", k, s.UserID)
			}
			return nil
		}); err != nil {
			return err
		}
		if n != m {
			t.Errorf("%d sessions but %d sessions_by_user entries", n, m)
		}

		users := bucket(tx, bktUsers)
		byEmail := bucket(tx, bktUsersByEmail)
		if err := users.ForEach(func(k, v []byte) error {
			u, err := getUser(tx, k)
			if err != nil {
				return err
			}
			if got := byEmail.Get([]byte(u.Email)); !bytes.Equal(got, k) {
				t.Errorf("users_by_email[%q] = %x; want %x", u.Email, got, k)
			}
			return nil
		}); err != nil {
			return err
		}
		return byEmail.ForEach(func(email, key []byte) error {
			u, err := getUser(tx, key)
			if err != nil {
				t.Errorf("users_by_email[%q] points at missing user %x", email, key)
				return nil
			}
			if u.Email != string(email) {
				t.Errorf("users_by_email[%q] points at user with email %q", email, u.Email)
			}
			return nil
		})
	})
	if err != nil {
		t.Fatal(err)
	}
}

// ---------------------------------------------------------------------
// OpenBolt, Ping

func TestOpenBoltCreatesFileAndBuckets(t *testing.T) {
	path := filepath.Join(t.TempDir(), "nested", "dir", "sigra.db")
	st, err := OpenBolt(path, BoltOptions{})
	if err != nil {
		t.Fatalf("OpenBolt: %v", err)
	}
	defer st.Close()
	if st.Path() != path {
		t.Errorf("Path() = %q; want %q", st.Path(), path)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if got := fi.Mode().Perm(); got != 0o600 {
		t.Errorf("file mode = %v; want -rw-------", got)
	}
	di, _ := os.Stat(filepath.Dir(path))
	if got := di.Mode().Perm(); got != 0o700 {
		t.Errorf("directory mode = %v; want drwx------", got)
	}
	if err := st.db.View(func(tx *bolt.Tx) error {
		root := tx.Bucket([]byte("sigra/v1"))
		if root == nil {
			t.Fatalf("root bucket sigra/v1 missing")
		}
		for _, name := range []string{"users", "users_by_email", "sessions", "sessions_by_user", "secrets"} {
			if root.Bucket([]byte(name)) == nil {
				t.Errorf("bucket sigra/v1/%s missing", name)
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if err := st.Ping(context.Background()); err != nil {
		t.Errorf("Ping = %v; want nil", err)
	}
}

// MustExist opens an existing store only: a missing one is ErrNoStore,
// and neither the file nor its directory is created; a held one is still
// ErrLocked.
func TestOpenBoltMustExist(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "nested")
	path := filepath.Join(dir, "sigra.db")
	if st, err := OpenBolt(path, BoltOptions{MustExist: true}); !errors.Is(err, ErrNoStore) || !strings.Contains(fmt.Sprint(err), path) {
		if st != nil {
			st.Close()
		}
		t.Fatalf("MustExist on a missing store: %v; want ErrNoStore naming %s", err, path)
	}
	if _, err := os.Stat(dir); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("MustExist created %s (%v)", dir, err)
	}
	first, err := OpenBolt(path, BoltOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := OpenBolt(path, BoltOptions{MustExist: true, LockTimeout: 50 * time.Millisecond}); !errors.Is(err, ErrLocked) {
		t.Errorf("MustExist on a held store: %v; want ErrLocked", err)
	}
	first.Close()
	again, err := OpenBolt(path, BoltOptions{MustExist: true})
	if err != nil {
		t.Fatalf("MustExist on an existing store: %v", err)
	}
	again.Close()
}

// An empty file where the store should be is one cut short (a copy onto
// a full disk): refused, by Caddy's start and by the CLI, never made a
// new store that would quietly replace the users it held.
func TestOpenBoltEmptyFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sigra.db")
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, opts := range []BoltOptions{{}, {MustExist: true}} {
		st, err := OpenBolt(path, opts)
		if st != nil {
			st.Close()
		}
		if !errors.Is(err, ErrDamaged) || !strings.Contains(fmt.Sprint(err), "the file is empty") {
			t.Errorf("OpenBolt(MustExist %t) on an empty file: %v; want ErrDamaged saying it is empty", opts.MustExist, err)
		}
	}
	if fi, err := os.Stat(path); err != nil || fi.Size() != 0 {
		t.Errorf("the empty file after the refusals: %v, %v; want it untouched", fi, err)
	}
}

// A file another process is making is empty until it writes its first
// pages, under its lock: the open waits for that lock, and then opens
// the store made, rather than calling it damaged.
func TestOpenBoltEmptyFileBeingMade(t *testing.T) {
	dir := t.TempDir()
	made := filepath.Join(dir, "made.db")
	st, err := OpenBolt(made, BoltOptions{})
	if err != nil {
		t.Fatal(err)
	}
	st.Close()
	content, err := os.ReadFile(made)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "sigra.db")
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	written := make(chan struct{})
	defer func() { <-written }() // before f closes
	go func() {
		defer close(written)
		time.Sleep(200 * time.Millisecond)
		_, _ = f.Write(content)
		_ = syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
	}()
	got, err := OpenBolt(path, BoltOptions{MustExist: true, LockTimeout: 5 * time.Second})
	if err != nil {
		t.Fatalf("opening a store while another process made it: %v; want it opened once made", err)
	}
	got.Close()
}

func TestOpenBoltLockedFailsFast(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sigra.db")
	first, err := OpenBolt(path, BoltOptions{})
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	second, err := OpenBolt(path, BoltOptions{LockTimeout: 50 * time.Millisecond})
	elapsed := time.Since(start)
	if err == nil {
		second.Close()
		first.Close()
		t.Fatal("second OpenBolt of a held file = nil error; want ErrLocked")
	}
	if !errors.Is(err, ErrLocked) {
		t.Errorf("error %q does not wrap ErrLocked", err)
	}
	if !strings.Contains(err.Error(), path) {
		t.Errorf("error %q does not name the file %s", err, path)
	}
	if elapsed > 5*time.Second {
		t.Errorf("OpenBolt took %v with a 50ms lock timeout; want it to fail fast", elapsed)
	}

	// Once released, the file opens and keeps what was written.
	if _, err := first.PutSecret(context.Background(), "k", []byte("v"), false); err != nil {
		t.Fatal(err)
	}
	if err := first.Close(); err != nil {
		t.Fatal(err)
	}
	again, err := OpenBolt(path, BoltOptions{LockTimeout: 50 * time.Millisecond})
	if err != nil {
		t.Fatalf("OpenBolt after Close: %v", err)
	}
	defer again.Close()
	if v, err := again.GetSecret(context.Background(), "k"); err != nil || string(v) != "v" {
		t.Errorf("GetSecret after reopen = %q, %v; want %q", v, err, "v")
	}
}

func TestOpenBoltGarbageFile(t *testing.T) {
	for name, content := range map[string][]byte{
		"text":       []byte("this is not a bbolt database\n"),
		"a few KiB":  bytes.Repeat([]byte("garbage!"), 8<<10),
		"zero pages": make([]byte, 64<<10),
	} {
		t.Run(name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "sigra.db")
			if err := os.WriteFile(path, content, 0o600); err != nil {
				t.Fatal(err)
			}
			st, err := OpenBolt(path, BoltOptions{LockTimeout: 50 * time.Millisecond})
			if err == nil {
				st.Close()
				t.Fatal("OpenBolt on garbage = nil error; want an error")
			}
			if !strings.Contains(err.Error(), path) {
				t.Errorf("error %q does not name the file %s", err, path)
			}
			if errors.Is(err, ErrLocked) {
				t.Errorf("error %q claims the file is locked", err)
			}
			if got, _ := os.ReadFile(path); !bytes.Equal(got, content) {
				t.Errorf("OpenBolt rewrote the garbage file")
			}
		})
	}
}

func TestPingAfterClose(t *testing.T) {
	st, err := OpenBolt(filepath.Join(t.TempDir(), "sigra.db"), BoltOptions{})
	if err != nil {
		t.Fatal(err)
	}
	st.Close()
	if err := st.Ping(context.Background()); err == nil {
		t.Errorf("Ping on a closed store = nil; want an error")
	}
}

// ---------------------------------------------------------------------
// Users

func TestBoltUserCRUD(t *testing.T) {
	st := openAuthBolt(t)
	ctx := context.Background()
	u := authNewUser("alice@example.com")
	u.EmailVerified = true
	u.Groups = []string{"dev", "admins"}
	u.PasswordHash = "$argon2id$v=19$m=64,t=1,p=1$c2FsdA$a2V5"
	if err := st.CreateUser(ctx, u); err != nil {
		t.Fatalf("CreateUser: %v", err)
	}

	byID, err := st.UserByID(ctx, u.ID)
	if err != nil {
		t.Fatalf("UserByID: %v", err)
	}
	if got, want := authJSON(t, byID), authJSON(t, u); got != want {
		t.Errorf("UserByID = %s; want %s", got, want)
	}
	byEmail, err := st.UserByEmail(ctx, "alice@example.com")
	if err != nil {
		t.Fatalf("UserByEmail: %v", err)
	}
	if got, want := authJSON(t, byEmail), authJSON(t, u); got != want {
		t.Errorf("UserByEmail = %s; want %s", got, want)
	}

	// The returned user is a copy: changing it changes nothing stored.
	byID.Groups[0] = "root"
	if again, _ := st.UserByID(ctx, u.ID); again.Groups[0] != "dev" {
		t.Errorf("stored groups = %q after changing a returned copy", again.Groups)
	}

	u.Name = "Alice Smith"
	u.Disabled = true
	u.UpdatedAt = authT0.Add(time.Hour)
	updated, err := st.UpdateUser(ctx, u.ID, false, func(s *authcore.User) error {
		s.Name, s.Disabled, s.UpdatedAt = u.Name, u.Disabled, u.UpdatedAt
		return nil
	})
	if err != nil {
		t.Fatalf("UpdateUser: %v", err)
	}
	if authJSON(t, updated) != authJSON(t, u) {
		t.Errorf("UpdateUser returned %s; want %s", authJSON(t, updated), authJSON(t, u))
	}
	if got, _ := st.UserByID(ctx, u.ID); authJSON(t, got) != authJSON(t, u) {
		t.Errorf("after UpdateUser UserByID = %s; want %s", authJSON(t, got), authJSON(t, u))
	}

	if err := st.DeleteUser(ctx, u.ID, ""); err != nil {
		t.Fatalf("DeleteUser: %v", err)
	}
	if _, err := st.UserByID(ctx, u.ID); !errors.Is(err, authcore.ErrNotFound) {
		t.Errorf("UserByID after delete = %v; want ErrNotFound", err)
	}
	if _, err := st.UserByEmail(ctx, u.Email); !errors.Is(err, authcore.ErrNotFound) {
		t.Errorf("UserByEmail after delete = %v; want ErrNotFound", err)
	}
	if err := st.DeleteUser(ctx, u.ID, ""); !errors.Is(err, authcore.ErrNotFound) {
		t.Errorf("second DeleteUser = %v; want ErrNotFound", err)
	}
	authCheckIndexes(t, st)
}

func TestBoltUserNotFound(t *testing.T) {
	st := openAuthBolt(t)
	ctx := context.Background()
	authCreate(t, st, "alice@example.com")
	ghost := authNewUser("ghost@example.com")
	tests := []struct {
		name string
		err  error
	}{
		{"UserByID unknown", func() error { _, err := st.UserByID(ctx, ids.New()); return err }()},
		{"UserByID not a UUID", func() error { _, err := st.UserByID(ctx, "alice"); return err }()},
		{"UserByID empty", func() error { _, err := st.UserByID(ctx, ""); return err }()},
		{"UserByEmail unknown", func() error { _, err := st.UserByEmail(ctx, "bob@example.com"); return err }()},
		{"UserByEmail not normalised", func() error { _, err := st.UserByEmail(ctx, "Alice@example.com"); return err }()},
		{"UpdateUser unknown", authSetEmail(st, ghost.ID, ghost.Email)},
		{"UpdateUser not a UUID", authSetEmail(st, "x", "x@example.com")},
		{"DeleteUser unknown", st.DeleteUser(ctx, ids.New(), "")},
		{"DeleteUser not a UUID", st.DeleteUser(ctx, "x", "")},
	}
	for _, tt := range tests {
		if !errors.Is(tt.err, authcore.ErrNotFound) {
			t.Errorf("%s = %v; want ErrNotFound", tt.name, tt.err)
		}
	}
	if _, err := st.UserByEmail(ctx, ghost.Email); !errors.Is(err, authcore.ErrNotFound) {
		t.Errorf("UpdateUser of an unknown user indexed its email (UserByEmail = %v)", err)
	}
	authCheckIndexes(t, st)
}

func TestBoltCreateUserRefuses(t *testing.T) {
	st := openAuthBolt(t)
	ctx := context.Background()
	alice := authCreate(t, st, "alice@example.com")

	dupEmail := authNewUser("alice@example.com")
	if err := st.CreateUser(ctx, dupEmail); !errors.Is(err, authcore.ErrEmailTaken) {
		t.Errorf("CreateUser with a taken email = %v; want ErrEmailTaken", err)
	}
	if _, err := st.UserByID(ctx, dupEmail.ID); !errors.Is(err, authcore.ErrNotFound) {
		t.Errorf("refused user was stored (UserByID = %v)", err)
	}

	dupID := authNewUser("bob@example.com")
	dupID.ID = alice.ID
	if err := st.CreateUser(ctx, dupID); err == nil {
		t.Errorf("CreateUser with an existing id = nil; want an error")
	}
	if _, err := st.UserByEmail(ctx, "bob@example.com"); !errors.Is(err, authcore.ErrNotFound) {
		t.Errorf("refused duplicate id left its email indexed (UserByEmail = %v)", err)
	}
	if got, _ := st.UserByID(ctx, alice.ID); got.Email != "alice@example.com" {
		t.Errorf("existing user overwritten: email %q", got.Email)
	}

	bad := authNewUser("carol@example.com")
	bad.ID = "not-a-uuid"
	if err := st.CreateUser(ctx, bad); !errors.Is(err, authcore.ErrInvalidInput) {
		t.Errorf("CreateUser with a non-UUID id = %v; want ErrInvalidInput", err)
	}
	if n, _ := st.CountUsers(ctx); n != 1 {
		t.Errorf("CountUsers = %d; want 1", n)
	}
	authCheckIndexes(t, st)
}

func TestBoltUpdateUserEmail(t *testing.T) {
	st := openAuthBolt(t)
	ctx := context.Background()
	alice := authCreate(t, st, "alice@example.com")
	bob := authCreate(t, st, "bob@example.com")

	if err := authSetEmail(st, alice.ID, "alice@new.example.com"); err != nil {
		t.Fatalf("UpdateUser with a new email: %v", err)
	}
	if _, err := st.UserByEmail(ctx, "alice@example.com"); !errors.Is(err, authcore.ErrNotFound) {
		t.Errorf("old email still finds a user (%v); want ErrNotFound", err)
	}
	if got, err := st.UserByEmail(ctx, "alice@new.example.com"); err != nil || got.ID != alice.ID {
		t.Errorf("UserByEmail(new) = %v, %v; want alice", got, err)
	}
	// The old address is free again.
	carol := authCreate(t, st, "alice@example.com")

	_, err := st.UpdateUser(ctx, bob.ID, false, func(u *authcore.User) error {
		u.Email, u.Name = "alice@new.example.com", "changed"
		return nil
	})
	if !errors.Is(err, authcore.ErrEmailTaken) {
		t.Errorf("UpdateUser to a taken email = %v; want ErrEmailTaken", err)
	}
	if got, _ := st.UserByID(ctx, bob.ID); got.Email != "bob@example.com" || got.Name == "changed" {
		t.Errorf("refused update changed bob: %+v", got)
	}
	if got, err := st.UserByEmail(ctx, "bob@example.com"); err != nil || got.ID != bob.ID {
		t.Errorf("UserByEmail(bob) after refused update = %v, %v; want bob", got, err)
	}
	if got, _ := st.UserByEmail(ctx, "alice@new.example.com"); got.ID != alice.ID {
		t.Errorf("refused update moved alice's address to %s", got.ID)
	}
	if got, _ := st.UserByEmail(ctx, "alice@example.com"); got.ID != carol.ID {
		t.Errorf("the reused address points at %s; want carol", got.ID)
	}
	authCheckIndexes(t, st)
}

func TestBoltListUsers(t *testing.T) {
	st := openAuthBolt(t)
	ctx := context.Background()
	var want []string
	for i := range 7 {
		u := authCreate(t, st, string(rune('a'+i))+"@example.com")
		want = append(want, u.ID)
	}
	slices.Sort(want) // UUIDv7 strings sort like their bytes: creation order

	if n, err := st.CountUsers(ctx); err != nil || n != 7 {
		t.Errorf("CountUsers = %d, %v; want 7", n, err)
	}

	var got []string
	after := ""
	var pages []int
	for range 10 {
		page, err := st.ListUsers(ctx, after, 3)
		if err != nil {
			t.Fatalf("ListUsers(%q, 3): %v", after, err)
		}
		if len(page) == 0 {
			break
		}
		pages = append(pages, len(page))
		for _, u := range page {
			got = append(got, u.ID)
		}
		after = page[len(page)-1].ID
	}
	if !slices.Equal(pages, []int{3, 3, 1}) {
		t.Errorf("page sizes = %v; want [3 3 1]", pages)
	}
	if !slices.Equal(got, want) {
		t.Errorf("ListUsers order = %q; want %q", got, want)
	}

	all, err := st.ListUsers(ctx, "", 100)
	if err != nil || len(all) != 7 {
		t.Errorf("ListUsers(\"\", 100) = %d users, %v; want 7", len(all), err)
	}
	if none, err := st.ListUsers(ctx, "", 0); err != nil || len(none) != 0 {
		t.Errorf("ListUsers(limit 0) = %d users, %v; want none", len(none), err)
	}

	// A cursor whose user was deleted meanwhile still continues after it.
	if err := st.DeleteUser(ctx, want[2], ""); err != nil {
		t.Fatal(err)
	}
	rest, err := st.ListUsers(ctx, want[2], 100)
	if err != nil {
		t.Fatal(err)
	}
	var restIDs []string
	for _, u := range rest {
		restIDs = append(restIDs, u.ID)
	}
	if !slices.Equal(restIDs, want[3:]) {
		t.Errorf("ListUsers after a deleted cursor = %q; want %q", restIDs, want[3:])
	}
	if n, _ := st.CountUsers(ctx); n != 6 {
		t.Errorf("CountUsers after a delete = %d; want 6", n)
	}

	if _, err := st.ListUsers(ctx, "not-a-uuid", 3); !errors.Is(err, authcore.ErrInvalidInput) {
		t.Errorf("ListUsers with a malformed cursor = %v; want ErrInvalidInput", err)
	}
}

func TestBoltCountUsersEmpty(t *testing.T) {
	st := openAuthBolt(t)
	if n, err := st.CountUsers(context.Background()); err != nil || n != 0 {
		t.Errorf("CountUsers on a new store = %d, %v; want 0", n, err)
	}
	if us, err := st.ListUsers(context.Background(), "", 10); err != nil || len(us) != 0 {
		t.Errorf("ListUsers on a new store = %d users, %v; want none", len(us), err)
	}
}

func TestBoltDeleteUserRemovesSessions(t *testing.T) {
	st := openAuthBolt(t)
	ctx := context.Background()
	alice := authCreate(t, st, "alice@example.com")
	bob := authCreate(t, st, "bob@example.com")
	a1, a2 := authNewSession(alice.ID, authT0), authNewSession(alice.ID, authT0)
	b1 := authNewSession(bob.ID, authT0)
	for _, s := range []*authcore.Session{a1, a2, b1} {
		authPutSession(t, st, s)
	}

	if err := st.DeleteUser(ctx, alice.ID, ""); err != nil {
		t.Fatal(err)
	}
	for _, s := range []*authcore.Session{a1, a2} {
		if _, err := st.GetSession(ctx, s.ID); !errors.Is(err, authcore.ErrNotFound) {
			t.Errorf("session %s of the deleted user: GetSession = %v; want ErrNotFound", s.ID, err)
		}
	}
	if got := authIndexed(t, st, alice.ID); len(got) != 0 {
		t.Errorf("sessions_by_user still lists %d sessions of the deleted user", len(got))
	}
	if _, err := st.GetSession(ctx, b1.ID); err != nil {
		t.Errorf("another user's session: GetSession = %v; want it kept", err)
	}
	if got := authIndexed(t, st, bob.ID); !slices.Equal(got, []authcore.SessionID{b1.ID}) {
		t.Errorf("bob's index = %v; want [%s]", got, b1.ID)
	}
	// The address can be registered again.
	authCreate(t, st, "alice@example.com")
	authCheckIndexes(t, st)
}

// TestBoltDeleteUserRemovesSecondFactorData: deleting an account also
// deletes what bolt_mfa.go keeps for it (sealed TOTP secret, recovery
// code hashes, regulation state under
// UserRegulationKeys and UserReauthPrefix), in the same transaction.
func TestBoltDeleteUserRemovesSecondFactorData(t *testing.T) {
	st := openAuthBolt(t)
	ctx := context.Background()
	u := authCreate(t, st, "alice@example.com")
	at := authT0

	code := make([]byte, 32)
	if err := st.CompleteTOTPEnrolment(ctx, u.ID, &authcore.TOTPRecord{Sealed: []byte("sealed-secret"), EnrolledAt: at}, [][]byte{code}); err != nil {
		t.Fatal(err)
	}
	// The password's, the codes', and a session's re-checks'; and
	// another user's whose id starts with this one's.
	keys := append(authcore.UserRegulationKeys(u.ID), authcore.UserReauthKey(u.ID, "a-session"))
	other := authcore.UserReauthKey(u.ID+"0", "a-session")
	if err := st.UpdateRegulation(ctx, append(keys, other), func(states []*authcore.RegulationState) error {
		for _, s := range states {
			s.Attempts = []time.Time{at}
			s.Expires = at.Add(time.Hour)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}

	if err := st.DeleteUser(ctx, u.ID, ""); err != nil {
		t.Fatalf("DeleteUser: %v", err)
	}
	if rec, err := st.TOTP(ctx, u.ID); !errors.Is(err, authcore.ErrNotFound) {
		t.Errorf("TOTP of a deleted user = %+v, %v; want ErrNotFound", rec, err)
	}
	if n, _, err := st.RecoveryCodeSet(ctx, u.ID); err != nil || n != 0 {
		t.Errorf("RecoveryCodeSet of a deleted user = %d, %v; want 0", n, err)
	}
	for _, key := range keys {
		if s, err := st.RegulationState(ctx, key); err != nil || !s.IsZero() {
			t.Errorf("RegulationState %s of a deleted user = %+v, %v; want none", key, s, err)
		}
	}
	if s, err := st.RegulationState(ctx, other); err != nil || s.IsZero() {
		t.Errorf("RegulationState %s of another user = %+v, %v; want it kept", other, s, err)
	}
}

// ---------------------------------------------------------------------
// Sessions

func TestBoltSessionRoundTrip(t *testing.T) {
	st := openAuthBolt(t)
	ctx := context.Background()
	u := authCreate(t, st, "alice@example.com")
	s := authNewSession(u.ID, authT0)
	s.AMR = []string{authcore.AMRPassword, authcore.AMROTP, authcore.AMRMFA}
	s.MFAAt = authT0.Add(time.Minute)
	s.Pending = true
	authPutSession(t, st, s)

	got, err := st.GetSession(ctx, s.ID)
	if err != nil {
		t.Fatalf("GetSession: %v", err)
	}
	if authJSON(t, got) != authJSON(t, s) {
		t.Errorf("GetSession = %s; want %s", authJSON(t, got), authJSON(t, s))
	}
	if got := authIndexed(t, st, u.ID); !slices.Equal(got, []authcore.SessionID{s.ID}) {
		t.Errorf("index = %v; want [%s]", got, s.ID)
	}

	// PutSession replaces.
	s.Pending = false
	authPutSession(t, st, s)
	if got, _ := st.GetSession(ctx, s.ID); got.Pending {
		t.Errorf("PutSession did not replace the stored session")
	}
	if got := authIndexed(t, st, u.ID); len(got) != 1 {
		t.Errorf("index has %d entries after replacing one session; want 1", len(got))
	}
	// A replacement with new times moves the time index entries.
	s.LastSeen, s.ExpiresAt = s.LastSeen.Add(time.Hour), s.ExpiresAt.Add(time.Hour)
	authPutSession(t, st, s)
	authCheckIndexes(t, st)

	if err := st.DeleteSession(ctx, s.ID); err != nil {
		t.Fatalf("DeleteSession: %v", err)
	}
	if _, err := st.GetSession(ctx, s.ID); !errors.Is(err, authcore.ErrNotFound) {
		t.Errorf("GetSession after delete = %v; want ErrNotFound", err)
	}
	if err := st.DeleteSession(ctx, s.ID); !errors.Is(err, authcore.ErrNotFound) {
		t.Errorf("second DeleteSession = %v; want ErrNotFound", err)
	}
	if got := authIndexed(t, st, u.ID); len(got) != 0 {
		t.Errorf("index still lists %v after DeleteSession", got)
	}
	authCheckIndexes(t, st)
}

func TestBoltPutSessionRefusesBadUserID(t *testing.T) {
	st := openAuthBolt(t)
	s := authNewSession("not-a-uuid", authT0)
	if err := st.PutSession(context.Background(), s); !errors.Is(err, authcore.ErrInvalidInput) {
		t.Errorf("PutSession with a non-UUID user id = %v; want ErrInvalidInput", err)
	}
	if _, err := st.GetSession(context.Background(), s.ID); !errors.Is(err, authcore.ErrNotFound) {
		t.Errorf("refused session stored (GetSession = %v)", err)
	}
}

func TestBoltPutSessionsIsOneTransaction(t *testing.T) {
	st := openAuthBolt(t)
	ctx := context.Background()
	u := authCreate(t, st, "alice@example.com")
	good := authNewSession(u.ID, authT0)
	bad := authNewSession("not-a-uuid", authT0)
	if err := st.PutSessions(ctx, []*authcore.Session{good, bad}); err == nil {
		t.Fatalf("PutSessions with one bad session = nil; want an error")
	}
	if _, err := st.GetSession(ctx, good.ID); !errors.Is(err, authcore.ErrNotFound) {
		t.Errorf("PutSessions stored part of a failed batch (GetSession = %v)", err)
	}

	ss := []*authcore.Session{authNewSession(u.ID, authT0), authNewSession(u.ID, authT0), authNewSession(u.ID, authT0)}
	if err := st.PutSessions(ctx, ss); err != nil {
		t.Fatal(err)
	}
	list, err := st.UserSessions(ctx, u.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := authIDs(list), authIDs(ss); !slices.Equal(got, want) {
		t.Errorf("UserSessions = %v; want %v", got, want)
	}
	authCheckIndexes(t, st)
}

func TestBoltUserSessionsAndDeleteUserSessions(t *testing.T) {
	st := openAuthBolt(t)
	ctx := context.Background()
	alice := authCreate(t, st, "alice@example.com")
	bob := authCreate(t, st, "bob@example.com")
	expired := authNewSession(alice.ID, authT0.Add(-24*time.Hour))
	a1, a2 := authNewSession(alice.ID, authT0), authNewSession(alice.ID, authT0)
	b1 := authNewSession(bob.ID, authT0)
	for _, s := range []*authcore.Session{expired, a1, a2, b1} {
		authPutSession(t, st, s)
	}

	list, err := st.UserSessions(ctx, alice.ID)
	if err != nil {
		t.Fatal(err)
	}
	wantAlice := authSortIDs([]authcore.SessionID{expired.ID, a1.ID, a2.ID})
	if got := authIDs(list); !slices.Equal(got, wantAlice) {
		t.Errorf("UserSessions(alice) = %v; want %v (expired ones included)", got, wantAlice)
	}

	deleted, err := st.DeleteUserSessions(ctx, alice.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got := authSortIDs(deleted); !slices.Equal(got, wantAlice) {
		t.Errorf("DeleteUserSessions returned %v; want %v", got, wantAlice)
	}
	for _, id := range wantAlice {
		if _, err := st.GetSession(ctx, id); !errors.Is(err, authcore.ErrNotFound) {
			t.Errorf("GetSession(%s) after DeleteUserSessions = %v; want ErrNotFound", id, err)
		}
	}
	if list, _ := st.UserSessions(ctx, alice.ID); len(list) != 0 {
		t.Errorf("UserSessions after DeleteUserSessions = %d sessions; want 0", len(list))
	}
	if got := authIndexed(t, st, alice.ID); len(got) != 0 {
		t.Errorf("index still lists %v", got)
	}
	if list, _ := st.UserSessions(ctx, bob.ID); len(list) != 1 || list[0].ID != b1.ID {
		t.Errorf("bob's sessions = %v; want only %s", authIDs(list), b1.ID)
	}
	if again, err := st.DeleteUserSessions(ctx, alice.ID); err != nil || len(again) != 0 {
		t.Errorf("second DeleteUserSessions = %v, %v; want none", again, err)
	}
	if got, err := st.DeleteUserSessions(ctx, "not-a-uuid"); err != nil || len(got) != 0 {
		t.Errorf("DeleteUserSessions(malformed id) = %v, %v; want none, nil", got, err)
	}
	if got, err := st.UserSessions(ctx, "not-a-uuid"); err != nil || len(got) != 0 {
		t.Errorf("UserSessions(malformed id) = %v, %v; want none, nil", got, err)
	}
	authCheckIndexes(t, st)
}

// TestBoltUserSessionsPrefixes: user keys are fixed-width, so one user's
// index prefix never matches another user's entries.
func TestBoltUserSessionsPrefixes(t *testing.T) {
	st := openAuthBolt(t)
	ctx := context.Background()
	var users []*authcore.User
	for i := range 5 {
		u := authCreate(t, st, string(rune('a'+i))+"@example.com")
		users = append(users, u)
		for range i + 1 {
			authPutSession(t, st, authNewSession(u.ID, authT0))
		}
	}
	for i, u := range users {
		list, err := st.UserSessions(ctx, u.ID)
		if err != nil {
			t.Fatal(err)
		}
		if len(list) != i+1 {
			t.Errorf("user %d has %d sessions; want %d", i, len(list), i+1)
		}
		for _, s := range list {
			if s.UserID != u.ID {
				t.Errorf("UserSessions(%s) returned a session of %s", u.ID, s.UserID)
			}
		}
	}
}

func TestBoltTouchSessions(t *testing.T) {
	st := openAuthBolt(t)
	ctx := context.Background()
	u := authCreate(t, st, "alice@example.com")
	s1 := authNewSession(u.ID, authT0)
	s2 := authNewSession(u.ID, authT0)
	authPutSession(t, st, s1)
	authPutSession(t, st, s2)
	_, missing := authcore.NewToken()

	later := authT0.Add(5 * time.Minute).In(time.FixedZone("CET", 3600))
	err := st.TouchSessions(ctx, map[authcore.SessionID]time.Time{
		s1.ID:   later,
		s2.ID:   authT0.Add(-time.Minute), // earlier: ignored
		missing: later,                    // missing: ignored, not created
	})
	if err != nil {
		t.Fatalf("TouchSessions: %v", err)
	}
	got1, _ := st.GetSession(ctx, s1.ID)
	if !got1.LastSeen.Equal(later) || got1.LastSeen.Location() != time.UTC {
		t.Errorf("LastSeen = %v; want %v in UTC", got1.LastSeen, later.UTC())
	}
	if authJSON(t, withLastSeen(got1, authT0)) != authJSON(t, s1) {
		t.Errorf("TouchSessions changed more than LastSeen: %s", authJSON(t, got1))
	}
	if got2, _ := st.GetSession(ctx, s2.ID); !got2.LastSeen.Equal(authT0) {
		t.Errorf("LastSeen lowered to %v; want it kept at %v", got2.LastSeen, authT0)
	}
	if _, err := st.GetSession(ctx, missing); !errors.Is(err, authcore.ErrNotFound) {
		t.Errorf("TouchSessions created a missing session (GetSession = %v)", err)
	}

	// Same time again: no change; an older time after a newer one: no change.
	if err := st.TouchSessions(ctx, map[authcore.SessionID]time.Time{s1.ID: authT0.Add(time.Minute)}); err != nil {
		t.Fatal(err)
	}
	if got, _ := st.GetSession(ctx, s1.ID); !got.LastSeen.Equal(later) {
		t.Errorf("LastSeen = %v after an older touch; want %v", got.LastSeen, later)
	}
	if err := st.TouchSessions(ctx, nil); err != nil {
		t.Errorf("TouchSessions(nil) = %v; want nil", err)
	}
	// The last-seen index moved with the session.
	authCheckIndexes(t, st)
}

func withLastSeen(s *authcore.Session, t time.Time) *authcore.Session {
	c := s.Clone()
	c.LastSeen = t
	return c
}

func TestBoltDeleteExpiredSessions(t *testing.T) {
	st := openAuthBolt(t)
	ctx := context.Background()
	u := authCreate(t, st, "alice@example.com")
	const idle = 30 * time.Minute
	now := authT0.Add(24 * time.Hour)

	mk := func(lastSeen, expires time.Time) *authcore.Session {
		s := authNewSession(u.ID, authT0)
		s.LastSeen, s.ExpiresAt = lastSeen, expires
		authPutSession(t, st, s)
		return s
	}
	fresh := mk(now.Add(-time.Minute), now.Add(time.Hour))
	idleBoundary := mk(now.Add(-idle), now.Add(time.Hour))
	idleLong := mk(now.Add(-2*time.Hour), now.Add(time.Hour))
	justActive := mk(now.Add(-idle+time.Nanosecond), now.Add(time.Hour))
	absBoundary := mk(now, now)
	absPast := mk(now, now.Add(-time.Hour))
	// An undecodable record, written around the store and so without
	// index entries, is removed when the file is next opened.
	var junk authcore.SessionID
	junk[0] = 0xff
	if err := st.db.Update(func(tx *bolt.Tx) error { return bucket(tx, bktSessions).Put(junk[:], []byte("{not json")) }); err != nil {
		t.Fatal(err)
	}
	st = reopenBolt(t, st)

	n, err := st.DeleteExpiredSessions(ctx, now, idle)
	if err != nil {
		t.Fatalf("DeleteExpiredSessions: %v", err)
	}
	if n != 4 {
		t.Errorf("DeleteExpiredSessions = %d; want 4", n)
	}
	for name, s := range map[string]*authcore.Session{"fresh": fresh, "just active": justActive} {
		if _, err := st.GetSession(ctx, s.ID); err != nil {
			t.Errorf("%s session deleted (GetSession = %v)", name, err)
		}
	}
	for name, id := range map[string]authcore.SessionID{
		"idle boundary": idleBoundary.ID, "idle long": idleLong.ID, "absolute boundary": absBoundary.ID,
		"absolute past": absPast.ID, "undecodable": junk,
	} {
		if _, err := st.GetSession(ctx, id); !errors.Is(err, authcore.ErrNotFound) {
			t.Errorf("%s session kept (GetSession = %v); want it deleted", name, err)
		}
	}
	authCheckIndexes(t, st)

	if n, err := st.DeleteExpiredSessions(ctx, now, idle); err != nil || n != 0 {
		t.Errorf("second DeleteExpiredSessions = %d, %v; want 0", n, err)
	}
	// Without an idle limit only the absolute end counts.
	if n, err := st.DeleteExpiredSessions(ctx, now.Add(59*time.Minute), 0); err != nil || n != 0 {
		t.Errorf("DeleteExpiredSessions(idle 0) = %d, %v; want 0", n, err)
	}
	if n, err := st.DeleteExpiredSessions(ctx, now.Add(time.Hour), 0); err != nil || n != 2 {
		t.Errorf("DeleteExpiredSessions at the absolute end = %d, %v; want 2", n, err)
	}
}

// ---------------------------------------------------------------------
// Secrets

func TestBoltSecrets(t *testing.T) {
	st := openAuthBolt(t)
	ctx := context.Background()
	if _, err := st.GetSecret(ctx, "k"); !errors.Is(err, authcore.ErrNotFound) {
		t.Errorf("GetSecret(missing) = %v; want ErrNotFound", err)
	}

	first := []byte("first")
	got, err := st.PutSecret(ctx, "k", first, true)
	if err != nil || string(got) != "first" {
		t.Errorf("PutSecret(ifAbsent) on a missing name = %q, %v; want %q", got, err, "first")
	}
	first[0] = 'X' // the caller's slice is not retained
	got[0] = 'Y'   // nor is the returned one shared
	if v, _ := st.GetSecret(ctx, "k"); string(v) != "first" {
		t.Errorf("GetSecret = %q after changing the caller's slices; want %q", v, "first")
	}

	got, err = st.PutSecret(ctx, "k", []byte("second"), true)
	if err != nil || string(got) != "first" {
		t.Errorf("PutSecret(ifAbsent) on an existing name = %q, %v; want the kept %q", got, err, "first")
	}
	if v, _ := st.GetSecret(ctx, "k"); string(v) != "first" {
		t.Errorf("GetSecret after PutSecret(ifAbsent) = %q; want %q", v, "first")
	}

	got, err = st.PutSecret(ctx, "k", []byte("third"), false)
	if err != nil || string(got) != "third" {
		t.Errorf("PutSecret(overwrite) = %q, %v; want %q", got, err, "third")
	}
	v, _ := st.GetSecret(ctx, "k")
	if string(v) != "third" {
		t.Errorf("GetSecret after overwrite = %q; want %q", v, "third")
	}
	v[0] = 'Z'
	if again, _ := st.GetSecret(ctx, "k"); string(again) != "third" {
		t.Errorf("GetSecret = %q after changing a returned slice; want %q", again, "third")
	}
	if other, err := st.GetSecret(ctx, "other"); !errors.Is(err, authcore.ErrNotFound) {
		t.Errorf("GetSecret(other) = %q, %v; want ErrNotFound", other, err)
	}
}

// TestBoltPutSecretIfAbsentConcurrent: concurrent first starts agree on
// one value.
func TestBoltPutSecretIfAbsentConcurrent(t *testing.T) {
	st := openAuthBolt(t)
	const n = 16
	got := make([][]byte, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			v, err := st.PutSecret(context.Background(), "k", []byte{byte(i)}, true)
			if err != nil {
				t.Error(err)
			}
			got[i] = v
		})
	}
	wg.Wait()
	stored, _ := st.GetSecret(context.Background(), "k")
	for i, v := range got {
		if !bytes.Equal(v, stored) {
			t.Errorf("starter %d got %v; stored is %v", i, v, stored)
		}
	}
}

// ---------------------------------------------------------------------
// Service over bbolt

type authEnv struct {
	svc *authcore.Service
	st  *Bolt
	clk *clock.Fake
	box *seal.Box
	ctx context.Context
}

func newAuthEnv(t *testing.T, cfg authcore.Config) *authEnv {
	t.Helper()
	return newAuthEnvOn(t, openAuthBolt(t), clock.NewFake(authT0), cfg)
}

func newAuthEnvOn(t *testing.T, st *Bolt, clk *clock.Fake, cfg authcore.Config) *authEnv {
	t.Helper()
	if cfg.Argon2 == (authcore.Argon2Params{}) {
		cfg.Argon2 = authCheapArgon2
	}
	box := authBox(t, 0)
	svc, err := authcore.NewService(slog.New(slog.DiscardHandler), clk, st, box, cfg)
	if err != nil {
		t.Fatalf("NewService: %v", err)
	}
	return &authEnv{svc: svc, st: st, clk: clk, box: box, ctx: context.Background()}
}

func (e *authEnv) user(t *testing.T, email string, groups ...string) *authcore.User {
	t.Helper()
	u, err := e.svc.CreateUser(e.ctx, authcore.NewUser{Email: email, Name: "Alice", Groups: groups, Password: authPassword})
	if err != nil {
		t.Fatalf("CreateUser(%s): %v", email, err)
	}
	return u
}

func (e *authEnv) login(t *testing.T, u *authcore.User, amr ...string) (string, *authcore.Session) {
	t.Helper()
	if len(amr) == 0 {
		amr = []string{authcore.AMRPassword}
	}
	token, sess, err := e.svc.StartSession(e.ctx, u, amr, authcore.ClientMeta{IP: "192.0.2.1", UserAgent: "test-agent"})
	if err != nil {
		t.Fatalf("StartSession: %v", err)
	}
	return token, sess
}

// mustAuth authenticates token and fails the test if it does not.
func (e *authEnv) mustAuth(t *testing.T, token string) *authcore.Principal {
	t.Helper()
	p, err := e.svc.Authenticate(e.ctx, token)
	if err != nil {
		t.Fatalf("Authenticate at T0+%v = %v; want a principal", e.clk.Now().Sub(authT0), err)
	}
	return p
}

// refused fails the test unless token is refused with ErrNoSession.
func (e *authEnv) refused(t *testing.T, token string) {
	t.Helper()
	if p, err := e.svc.Authenticate(e.ctx, token); !errors.Is(err, authcore.ErrNoSession) {
		t.Errorf("Authenticate at T0+%v = %v, %v; want ErrNoSession", e.clk.Now().Sub(authT0), p, err)
	}
}

// goneFromStore fails the test unless the session was deleted from the store.
func (e *authEnv) goneFromStore(t *testing.T, id authcore.SessionID) {
	t.Helper()
	if _, err := e.st.GetSession(e.ctx, id); !errors.Is(err, authcore.ErrNotFound) {
		t.Errorf("stored session %s: GetSession = %v; want it deleted", id, err)
	}
}

func TestServiceAuthenticate(t *testing.T) {
	e := newAuthEnv(t, authcore.Config{})
	u := e.user(t, "alice@example.com", "dev", "admins")
	token, sess := e.login(t, u, authcore.AMRPassword)

	p := e.mustAuth(t, token)
	if p.User.ID != u.ID || p.User.Email != "alice@example.com" || p.User.Name != "Alice" {
		t.Errorf("principal user = %+v; want alice", p.User)
	}
	if p.GroupsCSV != "dev,admins" {
		t.Errorf("GroupsCSV = %q; want %q", p.GroupsCSV, "dev,admins")
	}
	if p.AMRCSV != "pwd" {
		t.Errorf("AMRCSV = %q; want %q", p.AMRCSV, "pwd")
	}
	if p.SessionID != sess.ID.String() || p.Session.ID != sess.ID {
		t.Errorf("SessionID = %q; want %q", p.SessionID, sess.ID.String())
	}
	if p.SessionID == token {
		t.Errorf("SessionID equals the cookie token")
	}
	if p.Session.Pending || p.Session.MFA() {
		t.Errorf("password session: Pending %t, MFA %t; want false, false", p.Session.Pending, p.Session.MFA())
	}

	stored, err := e.st.GetSession(e.ctx, sess.ID)
	if err != nil {
		t.Fatalf("session not stored: %v", err)
	}
	want := &authcore.Session{
		ID: sess.ID, SignIn: sess.ID.String(), UserID: u.ID, CreatedAt: authT0, LastSeen: authT0, ExpiresAt: authT0.Add(12 * time.Hour),
		AuthTime: authT0, AMR: []string{"pwd"}, IP: "192.0.2.1", UserAgent: "test-agent", Plain: true, // not said to be over HTTPS
	}
	if authJSON(t, stored) != authJSON(t, want) {
		t.Errorf("stored session = %s; want %s", authJSON(t, stored), authJSON(t, want))
	}
	// The token itself is nowhere in the store.
	raw, _ := base64.RawURLEncoding.DecodeString(token)
	if err := e.st.db.View(func(tx *bolt.Tx) error {
		return bucket(tx, bktSessions).ForEach(func(k, v []byte) error {
			if bytes.Contains(k, raw) || bytes.Contains(v, raw) || bytes.Contains(v, []byte(token)) {
				t.Errorf("the cookie token is stored")
			}
			return nil
		})
	}); err != nil {
		t.Fatal(err)
	}

	// A cached hit returns the same principal.
	if again := e.mustAuth(t, token); again != p {
		t.Errorf("second Authenticate did not come from the cache")
	}
}

func TestServiceAuthenticateRefusesTokens(t *testing.T) {
	e := newAuthEnv(t, authcore.Config{})
	u := e.user(t, "alice@example.com")
	token, sess := e.login(t, u)
	unknown, _ := authcore.NewToken()
	for name, tok := range map[string]string{
		"empty":                          "",
		"garbage":                        "not a token",
		"truncated":                      token[:42],
		"padded":                         token + "=",
		"unknown":                        unknown,
		"the session id, not the cookie": sess.ID.String(),
	} {
		t.Run(name, func(t *testing.T) { e.refused(t, tok) })
	}
	e.mustAuth(t, token)
}

func TestServiceStartSessionTruncatesUserAgent(t *testing.T) {
	e := newAuthEnv(t, authcore.Config{})
	u := e.user(t, "alice@example.com")
	_, sess, err := e.svc.StartSession(e.ctx, u, []string{"pwd"}, authcore.ClientMeta{UserAgent: strings.Repeat("u", 1000)})
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := e.st.GetSession(e.ctx, sess.ID); len(got.UserAgent) != 256 {
		t.Errorf("stored user agent is %d bytes; want 256", len(got.UserAgent))
	}
	// A right-to-left override would show a sessions list reversed.
	_, sess, err = e.svc.StartSession(e.ctx, u, []string{"pwd"}, authcore.ClientMeta{UserAgent: "Mozilla\u202e <b>x</b>\u2066é"})
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := e.st.GetSession(e.ctx, sess.ID); got.UserAgent != "Mozilla\ufffd <b>x</b>\ufffdé" {
		t.Errorf("stored user agent %q; want its bidi controls replaced", got.UserAgent)
	}
}

func TestServiceIdleTimeout(t *testing.T) {
	e := newAuthEnv(t, authcore.Config{Idle: 30 * time.Minute})
	u := e.user(t, "alice@example.com")
	token, sess := e.login(t, u)

	e.clk.Advance(30*time.Minute - time.Nanosecond)
	e.mustAuth(t, token) // just inside, and now active again
	e.clk.Advance(29 * time.Minute)
	e.mustAuth(t, token) // 59 minutes after sign-in, 29 idle: sliding
	e.clk.Advance(30 * time.Minute)
	e.refused(t, token) // exactly Idle since the last use
	e.goneFromStore(t, sess.ID)

	e.clk.Advance(time.Minute)
	e.refused(t, token) // stays gone
}

// A session is valid on the host name it was signed in on alone, and
// its use on another site does not keep it from idling out.
func TestServiceSessionStaysOnItsHost(t *testing.T) {
	e := newAuthEnv(t, authcore.Config{Idle: 30 * time.Minute})
	u := e.user(t, "alice@example.com")
	token, sess, err := e.svc.StartSession(e.ctx, u, []string{authcore.AMRPassword}, authcore.ClientMeta{Host: "App.Example.com:8443"})
	if err != nil {
		t.Fatal(err)
	}
	if sess.Host != "app.example.com" {
		t.Fatalf("stored host %q; want app.example.com", sess.Host)
	}
	on := func(host string) error {
		_, err := e.svc.AuthenticateOn(e.ctx, token, host, false, e.clk.Now())
		return err
	}
	if err := on("app.example.com"); err != nil {
		t.Fatalf("on its own host: %v", err)
	}
	e.clk.Advance(20 * time.Minute)
	if err := on("admin.example.com"); !errors.Is(err, authcore.ErrOtherHost) || !errors.Is(err, authcore.ErrNoSession) {
		t.Fatalf("on another host: %v; want ErrOtherHost, an ErrNoSession", err)
	}
	e.clk.Advance(10 * time.Minute) // 30 idle on its own host, 10 since the other's use
	if err := on("app.example.com:443"); !errors.Is(err, authcore.ErrNoSession) || errors.Is(err, authcore.ErrOtherHost) {
		t.Errorf("on its own host after idling there: %v; want ErrNoSession (idled out)", err)
	}
	e.goneFromStore(t, sess.ID)

	// A host longer than any is kept cut short, and so matches nothing.
	long := strings.Repeat("a", 300) + ".example"
	_, sess, err = e.svc.StartSession(e.ctx, u, []string{authcore.AMRPassword}, authcore.ClientMeta{Host: long})
	if err != nil {
		t.Fatal(err)
	}
	if len(sess.Host) > 255 || sess.OnHost(long) {
		t.Errorf("a %d-byte host: stored %d bytes, valid there %v; want at most 255, not valid", len(long), len(sess.Host), sess.OnHost(long))
	}
}

// A session signed in over plain HTTP, whose token went in the clear,
// is not valid on HTTPS, even on its own host name, to a request or to
// a socket's recheck; nor is one renewed over plain HTTP (at a second
// factor, a password change), whatever it was before. One signed in,
// and renewed, over HTTPS is valid on both, as is one stored before
// sessions kept the scheme.
func TestServicePlainSessionStaysOffHTTPS(t *testing.T) {
	e := newAuthEnv(t, authcore.Config{})
	const host = "app.example.com"
	start := func(u *authcore.User, secure bool) (string, *authcore.Session) {
		t.Helper()
		token, sess, err := e.svc.StartSession(e.ctx, u, []string{authcore.AMRPassword}, authcore.ClientMeta{Host: host, Secure: secure})
		if err != nil {
			t.Fatal(err)
		}
		return token, sess
	}
	check := func(what, token string, onHTTPS bool) {
		t.Helper()
		now := e.clk.Now()
		if _, err := e.svc.AuthenticateOn(e.ctx, token, host+":8080", false, now); err != nil {
			t.Errorf("%s, over plain HTTP: %v", what, err)
		}
		want := error(nil)
		if !onHTTPS {
			want = authcore.ErrOtherHost
		}
		if _, err := e.svc.AuthenticateOn(e.ctx, token, host, true, now); !errors.Is(err, want) {
			t.Errorf("%s, over HTTPS: %v; want %v", what, err, want)
		}
		if _, err := e.svc.Recheck(e.ctx, token, host, true, now); !errors.Is(err, want) {
			t.Errorf("%s, rechecked over HTTPS: %v; want %v", what, err, want)
		}
	}
	u := e.user(t, "alice@example.com")
	plainToken, plain := start(u, false)
	if !plain.Plain {
		t.Error("a session signed in over plain HTTP is not Plain")
	}
	check("signed in over plain HTTP", plainToken, false)
	secureToken, secure := start(u, true)
	check("signed in over HTTPS", secureToken, true)

	token, _, err := e.svc.CompleteSecondFactor(e.ctx, secure.ID, authcore.AMROTP, false)
	if err != nil {
		t.Fatal(err)
	}
	check("signed in over HTTPS, its second factor over plain HTTP", token, false)
	token, _, err = e.svc.CompleteSecondFactor(e.ctx, plain.ID, authcore.AMROTP, true)
	if err != nil {
		t.Fatal(err)
	}
	check("signed in over plain HTTP, its second factor over HTTPS", token, false)
	_, secure = start(u, true)
	token, _, err = e.svc.CompleteSecondFactor(e.ctx, secure.ID, authcore.AMROTP, true)
	if err != nil {
		t.Fatal(err)
	}
	check("signed in and stepped up over HTTPS", token, true)

	// A password change is stored from the session as the store has it.
	_, secure = start(e.user(t, "bob@example.com"), true)
	token, _, err = e.svc.ChangePassword(e.ctx, secure, "a much longer new passphrase", false)
	if err != nil {
		t.Fatal(err)
	}
	check("signed in over HTTPS, its password changed over plain HTTP", token, false)
	_, secure = start(e.user(t, "carol@example.com"), true)
	token, _, err = e.svc.ChangePassword(e.ctx, secure, "a much longer new passphrase", true)
	if err != nil {
		t.Fatal(err)
	}
	check("signed in over HTTPS, its password changed there", token, true)

	// As an older version stored it: no "plain".
	old, err := decodeSession([]byte(`{"id":"` + secure.ID.String() + `","user_id":"u","host":"app.example.com"}`))
	if err != nil {
		t.Fatal(err)
	}
	if !old.OnSite(host, true) {
		t.Error("a session stored before sessions kept the scheme is not valid on HTTPS")
	}
}

func TestServiceLifetime(t *testing.T) {
	e := newAuthEnv(t, authcore.Config{Idle: 30 * time.Minute, Lifetime: time.Hour})
	u := e.user(t, "alice@example.com")
	token, sess := e.login(t, u)
	for _, step := range []time.Duration{20 * time.Minute, 20 * time.Minute, 20*time.Minute - time.Nanosecond} {
		e.clk.Advance(step)
		e.mustAuth(t, token)
	}
	e.clk.Advance(time.Nanosecond) // exactly one hour after sign-in, though active
	e.refused(t, token)
	e.goneFromStore(t, sess.ID)
}

// A session ends on the second: an identity assertion's exp is a whole
// second no later than the session's end, so a request in ExpiresAt's
// last fraction of a second would reach the app with an assertion whose
// exp equals its iat, already expired. It is refused instead.
func TestServiceLifetimeEndsOnTheSecond(t *testing.T) {
	e := newAuthEnv(t, authcore.Config{Idle: 30 * time.Minute, Lifetime: time.Hour})
	u := e.user(t, "alice@example.com")
	e.clk.Advance(time.Minute + 700*time.Millisecond)
	signedIn := e.clk.Now()
	token, sess := e.login(t, u)
	if !sess.ExpiresAt.Equal(signedIn.Add(time.Hour)) {
		t.Fatalf("ExpiresAt = %v; want sign-in + 1h = %v", sess.ExpiresAt, signedIn.Add(time.Hour))
	}
	end := sess.ExpiresAt.Truncate(time.Second)
	for _, at := range []time.Time{signedIn.Add(20 * time.Minute), signedIn.Add(40 * time.Minute), end.Add(-time.Nanosecond)} {
		e.clk.Advance(at.Sub(e.clk.Now()))
		e.mustAuth(t, token)
	}
	e.clk.Advance(time.Nanosecond) // 700 ms before ExpiresAt
	e.refused(t, token)
	e.goneFromStore(t, sess.ID)
}

func TestServiceDisabledUser(t *testing.T) {
	t.Run("through the service", func(t *testing.T) {
		e := newAuthEnv(t, authcore.Config{})
		u := e.user(t, "alice@example.com")
		token, sess := e.login(t, u)
		e.mustAuth(t, token)
		if _, err := e.svc.SetDisabled(e.ctx, u.ID, true); err != nil {
			t.Fatal(err)
		}
		e.refused(t, token) // at once, not after the cache TTL
		e.goneFromStore(t, sess.ID)
		if _, err := e.svc.CheckPassword(e.ctx, u.Email, authPassword); !errors.Is(err, authcore.ErrAccountDisabled) || !errors.Is(err, authcore.ErrInvalidCredentials) {
			t.Errorf("CheckPassword of a disabled user = %v; want ErrAccountDisabled, an ErrInvalidCredentials", err)
		}
		if _, err := e.svc.CheckPassword(e.ctx, u.Email, "wrong password!"); err != authcore.ErrInvalidCredentials {
			t.Errorf("CheckPassword of a disabled user, wrong password = %v; want exactly ErrInvalidCredentials", err)
		}
		if _, err := e.svc.SetDisabled(e.ctx, u.ID, false); err != nil {
			t.Fatal(err)
		}
		e.refused(t, token) // enabling again does not revive old sessions
		if _, err := e.svc.CheckPassword(e.ctx, u.Email, authPassword); err != nil {
			t.Errorf("CheckPassword after enabling = %v; want nil", err)
		}
	})
	t.Run("in the store by another instance", func(t *testing.T) {
		e := newAuthEnv(t, authcore.Config{CacheTTL: 10 * time.Second})
		u := e.user(t, "alice@example.com")
		token, sess := e.login(t, u)
		e.mustAuth(t, token)
		if _, err := e.st.UpdateUser(e.ctx, u.ID, false, func(u *authcore.User) error { u.Disabled = true; return nil }); err != nil {
			t.Fatal(err)
		}
		e.clk.Advance(10 * time.Second)
		e.refused(t, token)
		e.goneFromStore(t, sess.ID)
	})
}

func TestServiceDeletedUser(t *testing.T) {
	t.Run("session of a user that does not exist", func(t *testing.T) {
		e := newAuthEnv(t, authcore.Config{})
		token, id := authcore.NewToken()
		s := authNewSession(ids.New(), authT0)
		s.ID = id
		authPutSession(t, e.st, s)
		e.refused(t, token)
		e.goneFromStore(t, id)
	})
	t.Run("deleted in the store after caching", func(t *testing.T) {
		e := newAuthEnv(t, authcore.Config{CacheTTL: 10 * time.Second})
		u := e.user(t, "alice@example.com")
		token, _ := e.login(t, u)
		e.mustAuth(t, token)
		if err := e.st.DeleteUser(e.ctx, u.ID, ""); err != nil {
			t.Fatal(err)
		}
		e.clk.Advance(10 * time.Second)
		e.refused(t, token)
	})
}

func TestServiceEndSession(t *testing.T) {
	e := newAuthEnv(t, authcore.Config{})
	u := e.user(t, "alice@example.com")
	token, sess := e.login(t, u)
	other, _ := e.login(t, u)
	e.mustAuth(t, token)
	e.mustAuth(t, other)

	if ended, err := e.svc.EndSession(e.ctx, sess.ID); !ended || err != nil {
		t.Fatalf("EndSession = %v, %v; want true (this call ended it)", ended, err)
	}
	e.refused(t, token) // at once, although it was cached
	e.goneFromStore(t, sess.ID)
	e.mustAuth(t, other)
	if ended, err := e.svc.EndSession(e.ctx, sess.ID); ended || err != nil {
		t.Errorf("EndSession of an ended session = %v, %v; want false, nil", ended, err)
	}
	authCheckIndexes(t, e.st)
}

func TestServiceRevokeUserSessions(t *testing.T) {
	e := newAuthEnv(t, authcore.Config{})
	alice := e.user(t, "alice@example.com")
	bob := e.user(t, "bob@example.com")
	t1, s1 := e.login(t, alice)
	t2, s2 := e.login(t, alice)
	tb, _ := e.login(t, bob)
	for _, tok := range []string{t1, t2, tb} {
		e.mustAuth(t, tok)
	}

	revoked, err := e.svc.RevokeUserSessions(e.ctx, alice.ID)
	if err != nil {
		t.Fatalf("RevokeUserSessions: %v", err)
	}
	if got, want := authSortIDs(revoked), authSortIDs([]authcore.SessionID{s1.ID, s2.ID}); !slices.Equal(got, want) {
		t.Errorf("revoked = %v; want %v", got, want)
	}
	e.refused(t, t1)
	e.refused(t, t2)
	e.mustAuth(t, tb)
	if list, _ := e.st.UserSessions(e.ctx, alice.ID); len(list) != 0 {
		t.Errorf("%d sessions of alice left in the store", len(list))
	}
	authCheckIndexes(t, e.st)
}

func TestServiceUpdateUserShowsAtOnce(t *testing.T) {
	e := newAuthEnv(t, authcore.Config{CacheTTL: time.Hour})
	u := e.user(t, "alice@example.com", "dev")
	token, _ := e.login(t, u)
	if p := e.mustAuth(t, token); p.GroupsCSV != "dev" {
		t.Fatalf("GroupsCSV = %q; want %q", p.GroupsCSV, "dev")
	}
	e.clk.Advance(time.Second)
	updated, err := e.svc.UpdateUser(e.ctx, u.ID, func(u *authcore.User) error {
		u.Groups = append(u.Groups, "admins")
		u.Name = "Alice Admin"
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if !updated.UpdatedAt.Equal(authT0.Add(time.Second)) {
		t.Errorf("UpdatedAt = %v; want the clock's %v", updated.UpdatedAt, authT0.Add(time.Second))
	}
	p := e.mustAuth(t, token) // same instant: no TTL has passed
	if p.GroupsCSV != "dev,admins" || p.User.Name != "Alice Admin" {
		t.Errorf("after UpdateUser: groups %q, name %q; want %q, %q", p.GroupsCSV, p.User.Name, "dev,admins", "Alice Admin")
	}

	// A failing fn changes nothing.
	boom := errors.New("refused")
	if _, err := e.svc.UpdateUser(e.ctx, u.ID, func(u *authcore.User) error { u.Groups = nil; return boom }); !errors.Is(err, boom) {
		t.Errorf("UpdateUser with a failing fn = %v; want %v", err, boom)
	}
	if got, _ := e.st.UserByID(e.ctx, u.ID); !slices.Equal(got.Groups, []string{"dev", "admins"}) {
		t.Errorf("stored groups = %q after a failed update", got.Groups)
	}
	if _, err := e.svc.UpdateUser(e.ctx, ids.New(), func(*authcore.User) error { return nil }); !errors.Is(err, authcore.ErrNotFound) {
		t.Errorf("UpdateUser(unknown) = %v; want ErrNotFound", err)
	}
}

// TestServiceCacheTTL: changes made behind the service's back (another
// instance, the CLI) show once CacheTTL has passed, not before.
func TestServiceCacheTTL(t *testing.T) {
	e := newAuthEnv(t, authcore.Config{CacheTTL: 10 * time.Second})
	u := e.user(t, "alice@example.com", "dev")
	token, _ := e.login(t, u)
	other, otherSess := e.login(t, u)
	e.mustAuth(t, token)
	e.mustAuth(t, other)

	if _, err := e.st.UpdateUser(e.ctx, u.ID, false, func(u *authcore.User) error { u.Groups = []string{"dev", "admins"}; return nil }); err != nil {
		t.Fatal(err)
	}
	if err := e.st.DeleteSession(e.ctx, otherSess.ID); err != nil {
		t.Fatal(err)
	}

	e.clk.Advance(10*time.Second - time.Nanosecond)
	if p := e.mustAuth(t, token); p.GroupsCSV != "dev" {
		t.Errorf("within CacheTTL GroupsCSV = %q; want the cached %q", p.GroupsCSV, "dev")
	}
	e.clk.Advance(time.Nanosecond)
	if p := e.mustAuth(t, token); p.GroupsCSV != "dev,admins" {
		t.Errorf("after CacheTTL GroupsCSV = %q; want the stored %q", p.GroupsCSV, "dev,admins")
	}
	e.refused(t, other) // deleted in the store: gone after CacheTTL
}

func TestServicePendingSession(t *testing.T) {
	e := newAuthEnv(t, authcore.Config{})
	plain := e.user(t, "plain@example.com")
	mfaUser := e.user(t, "mfa@example.com")
	mfaUser, err := e.svc.UpdateUser(e.ctx, mfaUser.ID, func(u *authcore.User) error { u.SecondFactor = true; return nil })
	if err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name        string
		u           *authcore.User
		amr         []string
		wantPending bool
		wantMFA     bool
	}{
		{"no second factor, password", plain, []string{"pwd"}, false, false},
		{"second factor, password only", mfaUser, []string{"pwd"}, true, false},
		{"second factor, email link only", mfaUser, []string{"email"}, true, false},
		{"second factor, passkey with verification", mfaUser, []string{"hwk", "mfa"}, false, true},
		{"no second factor, passkey with verification", plain, []string{"swk", "mfa"}, false, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			token, sess := e.login(t, tt.u, tt.amr...)
			if sess.Pending != tt.wantPending {
				t.Errorf("StartSession Pending = %t; want %t", sess.Pending, tt.wantPending)
			}
			p := e.mustAuth(t, token) // a pending session is returned, flagged
			if p.Session.Pending != tt.wantPending || p.Session.MFA() != tt.wantMFA {
				t.Errorf("principal Pending %t, MFA %t; want %t, %t", p.Session.Pending, p.Session.MFA(), tt.wantPending, tt.wantMFA)
			}
			if tt.wantMFA && !p.Session.MFAAt.Equal(authT0) {
				t.Errorf("MFAAt = %v; want %v", p.Session.MFAAt, authT0)
			}
		})
	}

	// Completing the second factor shows at once, under a new id; the
	// pending session is gone.
	token, sess := e.login(t, mfaUser)
	e.mustAuth(t, token)
	e.clk.Advance(time.Second)
	token2, sess2, err := e.svc.CompleteSecondFactor(e.ctx, sess.ID, authcore.AMROTP, false)
	if err != nil {
		t.Fatal(err)
	}
	p := e.mustAuth(t, token2)
	if p.Session.Pending || !p.Session.MFA() || p.AMRCSV != "pwd,otp,mfa" {
		t.Errorf("after the second factor: Pending %t, MFA %t, AMRCSV %q; want false, true, %q", p.Session.Pending, p.Session.MFA(), p.AMRCSV, "pwd,otp,mfa")
	}
	if p.SessionID == sess.ID.String() || p.SessionID != sess2.ID.String() {
		t.Errorf("completing MFA kept the session id")
	}
	if _, err := e.svc.Authenticate(e.ctx, token); !errors.Is(err, authcore.ErrNoSession) {
		t.Errorf("the pending session after completion: %v; want ErrNoSession", err)
	}
}

func TestServiceStartSessionAlwaysNew(t *testing.T) {
	e := newAuthEnv(t, authcore.Config{})
	u := e.user(t, "alice@example.com")
	seenTok := map[string]bool{}
	seenID := map[authcore.SessionID]bool{}
	var tokens []string
	for range 5 {
		tok, sess := e.login(t, u)
		if seenTok[tok] || seenID[sess.ID] {
			t.Fatalf("StartSession reused token or id %s", sess.ID)
		}
		seenTok[tok], seenID[sess.ID] = true, true
		tokens = append(tokens, tok)
	}
	for _, tok := range tokens {
		e.mustAuth(t, tok)
	}
	if list, _ := e.st.UserSessions(e.ctx, u.ID); len(list) != 5 {
		t.Errorf("%d stored sessions; want 5", len(list))
	}
}

func TestServiceFlushTouches(t *testing.T) {
	cfg := authcore.Config{Idle: 30 * time.Minute} // TouchInterval 1m
	e := newAuthEnv(t, cfg)
	u := e.user(t, "alice@example.com")
	token, sess := e.login(t, u)
	lastSeen := func() time.Time {
		t.Helper()
		s, err := e.st.GetSession(e.ctx, sess.ID)
		if err != nil {
			t.Fatal(err)
		}
		return s.LastSeen
	}

	if err := e.svc.FlushTouches(e.ctx); err != nil {
		t.Errorf("FlushTouches with nothing queued = %v", err)
	}
	e.clk.Advance(2 * time.Minute)
	e.mustAuth(t, token)
	if got := lastSeen(); !got.Equal(authT0) {
		t.Errorf("stored LastSeen = %v before a flush; want it written lazily (still %v)", got, authT0)
	}
	if err := e.svc.FlushTouches(e.ctx); err != nil {
		t.Fatal(err)
	}
	if got, want := lastSeen(), authT0.Add(2*time.Minute); !got.Equal(want) {
		t.Errorf("stored LastSeen after flush = %v; want %v", got, want)
	}

	// Within the touch interval nothing more is queued.
	e.clk.Advance(10 * time.Second)
	e.mustAuth(t, token)
	if err := e.svc.FlushTouches(e.ctx); err != nil {
		t.Fatal(err)
	}
	if got, want := lastSeen(), authT0.Add(2*time.Minute); !got.Equal(want) {
		t.Errorf("stored LastSeen = %v after a use within the touch interval; want %v", got, want)
	}

	// A restarted instance (empty cache) sees the flushed activity: at
	// T0+31m the session has idled 29 minutes, not 31.
	e.clk.Set(authT0.Add(31 * time.Minute))
	restarted := newAuthEnvOn(t, e.st, e.clk, cfg)
	restarted.mustAuth(t, token)
}

func TestServiceSetPassword(t *testing.T) {
	e := newAuthEnv(t, authcore.Config{})
	u := e.user(t, "alice@example.com")
	t1, _ := e.login(t, u)
	t2, _ := e.login(t, u)
	e.mustAuth(t, t1)

	if err := e.svc.SetPassword(e.ctx, u.ID, "short"); !errors.Is(err, authcore.ErrInvalidInput) {
		t.Errorf("SetPassword(short) = %v; want ErrInvalidInput", err)
	}
	e.mustAuth(t, t1) // a refused change ends nothing

	const newPW = "a new and longer passphrase"
	if err := e.svc.SetPassword(e.ctx, u.ID, newPW); err != nil {
		t.Fatalf("SetPassword: %v", err)
	}
	e.refused(t, t1)
	e.refused(t, t2)
	if list, _ := e.st.UserSessions(e.ctx, u.ID); len(list) != 0 {
		t.Errorf("%d sessions left after SetPassword", len(list))
	}
	if _, err := e.svc.CheckPassword(e.ctx, u.Email, authPassword); !errors.Is(err, authcore.ErrInvalidCredentials) {
		t.Errorf("old password after SetPassword: %v; want ErrInvalidCredentials", err)
	}
	if _, err := e.svc.CheckPassword(e.ctx, u.Email, newPW); err != nil {
		t.Errorf("new password after SetPassword: %v; want nil", err)
	}
	if err := e.svc.SetPassword(e.ctx, ids.New(), newPW); !errors.Is(err, authcore.ErrNotFound) {
		t.Errorf("SetPassword(unknown user) = %v; want ErrNotFound", err)
	}
}

func TestServiceCreateUserDuplicateEmail(t *testing.T) {
	e := newAuthEnv(t, authcore.Config{})
	e.user(t, "alice@example.com")
	for _, email := range []string{"alice@example.com", "ALICE@Example.com", "  alice@example.com  "} {
		if u, err := e.svc.CreateUser(e.ctx, authcore.NewUser{Email: email}); !errors.Is(err, authcore.ErrEmailTaken) {
			t.Errorf("CreateUser(%q) = %v, %v; want ErrEmailTaken", email, u, err)
		}
	}
	if n, _ := e.st.CountUsers(e.ctx); n != 1 {
		t.Errorf("CountUsers = %d; want 1", n)
	}
	authCheckIndexes(t, e.st)
}

func TestServiceLookupUser(t *testing.T) {
	e := newAuthEnv(t, authcore.Config{})
	u := e.user(t, "alice@example.com")
	for _, q := range []string{u.ID, "alice@example.com", "Alice@Example.COM"} {
		got, err := e.svc.LookupUser(e.ctx, q)
		if err != nil || got.ID != u.ID {
			t.Errorf("LookupUser(%q) = %v, %v; want %s", q, got, err, u.ID)
		}
	}
	for _, q := range []string{ids.New(), "bob@example.com", "nobody"} {
		if got, err := e.svc.LookupUser(e.ctx, q); !errors.Is(err, authcore.ErrNotFound) {
			t.Errorf("LookupUser(%q) = %v, %v; want ErrNotFound", q, got, err)
		}
	}
	if _, err := e.svc.LookupUser(e.ctx, "Alice <alice@example.com>"); !errors.Is(err, authcore.ErrInvalidInput) {
		t.Errorf("LookupUser(display name) = %v; want ErrInvalidInput", err)
	}
}

func TestServiceCheckPasswordOnBolt(t *testing.T) {
	e := newAuthEnv(t, authcore.Config{})
	u := e.user(t, "alice@example.com")
	if got, err := e.svc.CheckPassword(e.ctx, "Alice@example.com", authPassword); err != nil || got.ID != u.ID {
		t.Errorf("CheckPassword(right) = %v, %v; want alice", got, err)
	}
	for name, c := range map[string][2]string{
		"wrong password": {"alice@example.com", "wrong password!"},
		"unknown user":   {"bob@example.com", authPassword},
	} {
		if _, err := e.svc.CheckPassword(e.ctx, c[0], c[1]); err != authcore.ErrInvalidCredentials {
			t.Errorf("%s: CheckPassword = %v; want ErrInvalidCredentials", name, err)
		}
	}
}

// ---------------------------------------------------------------------
// KeyRing over bbolt

func TestKeyRingPersistsAcrossRestart(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sigra.db")
	ctx := context.Background()
	clk := clock.NewFake(authT0)

	st, err := OpenBolt(path, BoltOptions{})
	if err != nil {
		t.Fatal(err)
	}
	first, err := authcore.LoadKeyRing(ctx, clk, st, authBox(t, 1), authcore.KeyRingConfig{})
	if err != nil {
		t.Fatalf("first start: %v", err)
	}
	sealed, err := st.GetSecret(ctx, "assertion_keys")
	if err != nil {
		t.Fatalf("no sealed key set stored: %v", err)
	}
	if bytes.Contains(sealed, []byte(first.ActiveKeyID())) || bytes.Contains(sealed, []byte("pkcs8")) {
		t.Errorf("stored key set is readable: %q", sealed)
	}
	st.Close()

	st, err = OpenBolt(path, BoltOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	clk.Advance(24 * time.Hour)
	second, err := authcore.LoadKeyRing(ctx, clk, st, authBox(t, 1), authcore.KeyRingConfig{})
	if err != nil {
		t.Fatalf("second start: %v", err)
	}
	if second.ActiveKeyID() != first.ActiveKeyID() || !bytes.Equal(second.JWKS(), first.JWKS()) {
		t.Errorf("after restart kid %q; want the stored %q", second.ActiveKeyID(), first.ActiveKeyID())
	}

	wrong := authBox(t, 2)
	_, err = authcore.LoadKeyRing(ctx, clk, st, wrong, authcore.KeyRingConfig{})
	if err == nil {
		t.Fatal("LoadKeyRing with another encryption key = nil; want an error")
	}
	if !strings.Contains(err.Error(), wrong.ID()) {
		t.Errorf("error %q does not name the key id %q", err, wrong.ID())
	}
	if again, _ := st.GetSecret(ctx, "assertion_keys"); !bytes.Equal(again, sealed) {
		t.Errorf("a refused start replaced the stored key set")
	}

	es, err := authcore.LoadKeyRing(ctx, clk, st, authBox(t, 1), authcore.KeyRingConfig{Algorithm: authcore.AlgES256})
	if err != nil {
		t.Fatal(err)
	}
	if es.ActiveKeyID() == first.ActiveKeyID() || !bytes.Contains(es.JWKS(), []byte(first.ActiveKeyID())) {
		t.Errorf("switching to ES256: kid %q, JWKS %s; want a new kid with %q still published", es.ActiveKeyID(), es.JWKS(), first.ActiveKeyID())
	}
}

func TestKeyRingConcurrentFirstStarts(t *testing.T) {
	st := openAuthBolt(t)
	const n = 8
	kids := make([]string, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			kr, err := authcore.LoadKeyRing(context.Background(), clock.NewFake(authT0), st, authBox(t, 1), authcore.KeyRingConfig{})
			if err != nil {
				t.Error(err)
				return
			}
			kids[i] = kr.ActiveKeyID()
		})
	}
	wg.Wait()
	for i, k := range kids {
		if k != kids[0] {
			t.Errorf("instance %d signs with %q, instance 0 with %q; want one key", i, k, kids[0])
		}
	}
}

// TestServiceAssertionFollowsUser: the cached assertion survives a cache
// reload when nothing it asserts changed, and is re-signed when the user
// changes.
func TestServiceAssertionFollowsUser(t *testing.T) {
	e := newAuthEnv(t, authcore.Config{CacheTTL: 10 * time.Second})
	kr, err := authcore.LoadKeyRing(e.ctx, e.clk, e.st, e.box, authcore.KeyRingConfig{})
	if err != nil {
		t.Fatal(err)
	}
	u := e.user(t, "alice@example.com", "dev")
	token, _ := e.login(t, u)
	const iss = "https://app.example.com"

	p1 := e.mustAuth(t, token)
	a1, err := kr.Assertion(p1, iss, iss, e.clk.Now())
	if err != nil {
		t.Fatal(err)
	}
	e.clk.Advance(10 * time.Second)
	p2 := e.mustAuth(t, token)
	if p2 == p1 {
		t.Fatalf("principal not reloaded after CacheTTL")
	}
	if a2, _ := kr.Assertion(p2, iss, iss, e.clk.Now()); a2 != a1 {
		t.Errorf("assertion re-signed after a reload with no change; want the cached one carried over")
	}

	if _, err := e.svc.UpdateUser(e.ctx, u.ID, func(u *authcore.User) error { u.Groups = []string{"dev", "admins"}; return nil }); err != nil {
		t.Fatal(err)
	}
	p3 := e.mustAuth(t, token)
	a3, err := kr.Assertion(p3, iss, iss, e.clk.Now())
	if err != nil {
		t.Fatal(err)
	}
	if a3 == a1 {
		t.Fatalf("assertion not re-signed after the user's groups changed")
	}
	payload, err := base64.RawURLEncoding.DecodeString(strings.Split(a3, ".")[1])
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(payload, []byte(`"groups":["dev","admins"]`)) {
		t.Errorf("re-signed assertion payload %s; want the new groups", payload)
	}
}

// A user record that does not decode is named in the error, so the
// operator can tell which one is damaged.
func TestDamagedUserRecordIsNamed(t *testing.T) {
	st := openAuthBolt(t)
	ok := authCreate(t, st, "ok@example.com")
	bad := authCreate(t, st, "bad@example.com")
	key, _ := userKey(bad.ID)
	if err := st.db.Update(func(tx *bolt.Tx) error { return bucket(tx, bktUsers).Put(key, []byte("{not json")) }); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, err := st.ListUsers(ctx, "", 10); err == nil || !strings.Contains(err.Error(), "user "+bad.ID) || !strings.Contains(err.Error(), "damaged") {
		t.Errorf("ListUsers over a damaged record: %v; want an error naming user %s as damaged", err, bad.ID)
	}
	if _, err := st.UserByID(ctx, bad.ID); err == nil || !strings.Contains(err.Error(), "user "+bad.ID) {
		t.Errorf("UserByID of a damaged record: %v; want an error naming it", err)
	}
	if u, err := st.UserByID(ctx, ok.ID); err != nil || u.Email != "ok@example.com" {
		t.Errorf("UserByID of the other user: %v, %v; want it read", u, err)
	}
}

// A first start that cannot write the new store (a full disk) leaves no
// empty file, which the next start would call a damaged store: once the
// disk has room, that start makes the store.
func TestOpenBoltFailedFirstWriteLeavesNoFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "new", "sigra.db")
	readOnly := func(name string, flag int, perm os.FileMode) (*os.File, error) {
		return os.OpenFile(name, flag&^(os.O_RDWR|os.O_WRONLY)|os.O_RDONLY, perm) // creates, but every write fails
	}
	if _, err := OpenBolt(path, BoltOptions{openFile: readOnly}); err == nil {
		t.Fatal("OpenBolt with writes failing: no error")
	}
	if _, err := os.Lstat(path); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("after the failed first open: %v; want no file left", err)
	}
	st, err := OpenBolt(path, BoltOptions{})
	if err != nil {
		t.Fatalf("the next open: %v; want a new store", err)
	}
	st.Close()

	// A store that is there is never removed, whatever fails.
	if _, err := OpenBolt(path, BoltOptions{openFile: readOnly}); err == nil {
		t.Fatal("OpenBolt of the store with writes failing: no error")
	}
	if _, err := OpenBolt(path, BoltOptions{}); err != nil {
		t.Fatalf("the store after a failed open: %v; want it kept", err)
	}
}

// A store records its layout's format. One written by a newer Sigra, in
// a layout this build does not know, is refused, not run on; one from
// before the format was kept opens and is marked.
func TestStoreFormat(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sigra.db")
	st, err := OpenBolt(path, BoltOptions{})
	if err != nil {
		t.Fatal(err)
	}
	format := func(v []byte) {
		t.Helper()
		if err := st.db.Update(func(tx *bolt.Tx) error {
			b := tx.Bucket(rootBucket).Bucket(bktFormat)
			if v == nil {
				return b.Delete(keyFormat)
			}
			return b.Put(keyFormat, v)
		}); err != nil {
			t.Fatal(err)
		}
	}
	read := func() string {
		t.Helper()
		var v string
		_ = st.db.View(func(tx *bolt.Tx) error {
			v = string(tx.Bucket(rootBucket).Bucket(bktFormat).Get(keyFormat))
			return nil
		})
		return v
	}
	if got := read(); got != strconv.Itoa(storeFormat) {
		t.Fatalf("a new store's format = %q; want %d", got, storeFormat)
	}
	format(nil) // as before the format was kept
	st.Close()
	if st, err = OpenBolt(path, BoltOptions{}); err != nil {
		t.Fatalf("a store without a format: %v; want it opened", err)
	}
	if got := read(); got != strconv.Itoa(storeFormat) {
		t.Errorf("the format after opening an older store = %q; want %d", got, storeFormat)
	}
	format([]byte(strconv.Itoa(storeFormat + 1)))
	st.Close()
	if _, err := OpenBolt(path, BoltOptions{}); !errors.Is(err, ErrNewerStore) || !strings.Contains(err.Error(), path) {
		t.Fatalf("a store of a newer format: %v; want ErrNewerStore naming the file", err)
	}
	if err := CheckIsBolt(path); !errors.Is(err, ErrNewerStore) || !strings.Contains(err.Error(), path) {
		t.Errorf("CheckIsBolt (caddy validate) of a store of a newer format: %v; want ErrNewerStore naming the file", err)
	}
}
