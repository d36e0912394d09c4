// Package caddymodule is the Caddy glue of the Sigra gateway: the `sigra`
// app, the `sigra_portal` and `sigra_gate` HTTP handlers, their Caddyfile
// syntax, admin API routes and CLI subcommands. The identity logic lives
// in authcore; this package only adapts it to Caddy.
package caddymodule

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode"

	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"
	"go.uber.org/zap/exp/zapslog"

	"github.com/sigra-auth/caddy-sigra/audit"
	"github.com/sigra-auth/caddy-sigra/authcore"
	"github.com/sigra-auth/caddy-sigra/internal/clock"
	"github.com/sigra-auth/caddy-sigra/internal/seal"
	"github.com/sigra-auth/caddy-sigra/store"
)

func init() {
	caddy.RegisterModule(App{})
}

// DefaultPrefix is where the portal is served.
const DefaultPrefix = "/.sigra"

// App is the `sigra` app: the shared state behind every sigra_portal and
// sigra_gate handler (storage, keys, sessions) and its global options.
type App struct {
	// Storage selects the backend. Default: bbolt at
	// <Caddy data dir>/sigra/sigra.db.
	Storage *StorageConfig `json:"storage,omitempty"`
	// Session sets session timeouts.
	Session *SessionConfig `json:"session,omitempty"`
	// Keys configures the identity assertion signing key and the
	// encryption key for secrets at rest.
	Keys *KeysConfig `json:"keys,omitempty"`
	// Prefix is the path under which the portal is served. Default /.sigra.
	Prefix string `json:"prefix,omitempty"`
	// AdminGroup names the group whose members may use the admin pages and
	// API. Default "admins".
	AdminGroup string `json:"admin_group,omitempty"`
	// AdminMFAMaxAge is how recent an admin's second factor must be for
	// the admin API. Default 30m.
	AdminMFAMaxAge caddy.Duration `json:"admin_mfa_max_age,omitempty"`
	// AdminHosts, when set, are the only host names whose portal serves
	// the admin pages and API; elsewhere they are not found. A script in
	// the app (an XSS, an uploaded page) runs with the app's origin, and
	// on a site that serves them would act as any admin who opens it.
	AdminHosts []string `json:"admin_hosts,omitempty"`
	// AllowedRedirectHosts lists other hosts that a post-login `rd` may
	// point at (host or host:port).
	AllowedRedirectHosts []string `json:"allowed_redirect_hosts,omitempty"`
	// HeaderAliases turns on extra identity header families. "remote"
	// sends Remote-User, Remote-Email, Remote-Groups and Remote-Name.
	HeaderAliases []string `json:"header_aliases,omitempty"`
	// AssertionAudience is the assertion's `aud`. Default: the site origin.
	AssertionAudience string `json:"assertion_audience,omitempty"`
	// PathParams is "allow" to let through request paths with ';',
	// which are refused by default (pathRefusal): only for apps that
	// treat ';' as an ordinary character, as servlet containers do not.
	PathParams string `json:"path_params,omitempty"`
	// Regulation limits failed password and second-factor attempts.
	Regulation *RegulationConfig `json:"regulation,omitempty"`
	// Audit configures retention and webhooks of the audit trail.
	Audit *AuditConfig `json:"audit,omitempty"`
	// BootstrapAdmin is the email of the admin created, with a random
	// password printed once, when the store has no users. "off" disables
	// it. Default admin@localhost.
	BootstrapAdmin string `json:"bootstrap_admin,omitempty"`

	logger  *zap.Logger
	slog    *slog.Logger
	clock   clock.Clock
	metrics *metrics // nil outside a running Caddy (the CLI)
	// caddyCtx is the context of the config that holds the app (zero
	// outside Caddy's config loading: the CLI, tests).
	caddyCtx caddy.Context

	remoteAliases bool
	pathParams    bool       // PathParams allow
	gateReads     *gateReads // set by Provision
	storagePath   string
	// signingKeyPath is keys.signing_key with its placeholders replaced.
	signingKeyPath string
	// assertionAudience is AssertionAudience with its placeholders
	// replaced.
	assertionAudience string
	// poolKey is the key the store is open under in dbPool (Start).
	poolKey string

	life *lifecycle
}

// lifecycle is the App's mutable state between Start and Stop.
type lifecycle struct {
	rt        atomic.Pointer[runtime]
	rtForStop *runtime
	ready     chan struct{}
	cancel    context.CancelFunc
	wg        sync.WaitGroup
	// prev is the app that ran before this one started, until this
	// one's config is in force: if Caddy refuses the config after all,
	// prev goes on running and is the running app again.
	prev atomic.Pointer[App]
}

// StorageConfig selects the storage backend.
type StorageConfig struct {
	// Backend is "bbolt" (the default).
	Backend string `json:"backend,omitempty"`
	// Path is the bbolt file. Default <Caddy data dir>/sigra/sigra.db.
	Path string `json:"path,omitempty"`
}

// SessionConfig sets session timeouts.
type SessionConfig struct {
	// Idle ends a session unused this long. Default 30m.
	Idle caddy.Duration `json:"idle,omitempty"`
	// Lifetime ends a session this long after sign-in. Default 12h.
	Lifetime caddy.Duration `json:"lifetime,omitempty"`
	// PendingLifetime ends a session still waiting for its second factor
	// (the password was right) this long after sign-in. Default 10m.
	PendingLifetime caddy.Duration `json:"pending_lifetime,omitempty"`
}

// check refuses a timeout that could never end a session: idle or
// pending_lifetime longer than the lifetime (the default one when
// lifetime is not set), which an operator who wrote "idle 24h" would
// otherwise believe in. It names the option at fault.
func (s *SessionConfig) check() (option string, err error) {
	life, which := time.Duration(s.Lifetime), "lifetime"
	if life <= 0 {
		life, which = authcore.DefaultLifetime, "the default lifetime"
	}
	for _, o := range []struct {
		name string
		d    caddy.Duration
	}{{"idle", s.Idle}, {"pending_lifetime", s.PendingLifetime}} {
		if time.Duration(o.d) > life {
			return o.name, fmt.Errorf("session: %s %s is longer than %s %s, which ends every session first: shorten %s, or set a longer lifetime",
				o.name, shortDuration(time.Duration(o.d)), which, shortDuration(life), o.name)
		}
	}
	return "", nil
}

// durationFloors are the shortest values of the duration options that
// still do what they say, and what a shorter one would do instead:
// "find_time 1ns" is accepted as a duration, and turns lockout off.
var durationFloors = map[string]struct {
	section string
	floor   time.Duration
	why     string
}{
	"find_time":         {"regulation: ", time.Minute, "failures older than it are forgotten, so nobody is ever banned"},
	"ban_time":          {"regulation: ", time.Minute, "a ban that short stops no guessing"},
	"idle":              {"session: ", time.Minute, "sessions would end between two clicks"},
	"lifetime":          {"session: ", time.Minute, "sessions would end before they are used"},
	"pending_lifetime":  {"session: ", time.Minute, "nobody could type a second factor in time"},
	"assertion_ttl":     {"keys: ", 30 * time.Second, "assertions would expire on their way to the app, whose clock may differ"},
	"admin_mfa_max_age": {"", time.Minute, "admins would be sent to their second factor on every page"},
	"max_age":           {"mfa: ", time.Minute, "users would be sent to their second factor on every request"},
}

// checkFloor refuses a value of the duration option name under its
// durationFloors entry; other options have none.
func checkFloor(name string, d time.Duration) error {
	f, ok := durationFloors[name]
	if !ok || d >= f.floor {
		return nil
	}
	return fmt.Errorf("%s%s %s is under %s: %s", f.section, name, d, shortDuration(f.floor), f.why)
}

// shortDuration writes d as an operator would: 24h, not 24h0m0s.
func shortDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

// KeysConfig configures keys.
type KeysConfig struct {
	// Algorithm signs the identity assertion: EdDSA (default) or ES256.
	Algorithm string `json:"algorithm,omitempty"`
	// SigningKey is a PEM file with the assertion signing key. Default: a
	// key generated on first start and kept in storage.
	SigningKey string `json:"signing_key,omitempty"`
	// EncryptionKey is base64 of 32 bytes that encrypts secrets at rest.
	// Default: generated into encryption.key next to the bbolt file (with
	// the default storage, <Caddy data dir>/sigra/), where the CLI finds
	// it too. Back it up apart from the database.
	EncryptionKey string `json:"encryption_key,omitempty"`
	// AssertionTTL is the assertion lifetime. Default 5m.
	AssertionTTL caddy.Duration `json:"assertion_ttl,omitempty"`
}

// RegulationConfig limits failed attempts (DESIGN.md: regulation).
type RegulationConfig struct {
	// MaxRetries failed attempts on one account within FindTime ban it.
	// Default 5.
	MaxRetries int `json:"max_retries,omitempty"`
	// MaxRetriesPerIP failed attempts from one client IP (IPv6: per /64)
	// within FindTime ban the IP, across accounts. Default 4×MaxRetries.
	MaxRetriesPerIP int `json:"max_retries_per_ip,omitempty"`
	// FindTime is the counting window. Default 10m.
	FindTime caddy.Duration `json:"find_time,omitempty"`
	// BanTime is how long a ban lasts. Default 15m.
	BanTime caddy.Duration `json:"ban_time,omitempty"`
	// MaxTOTPFailures wrong authenticator-app codes in a row lock the
	// app until a recovery code passes or an admin unlocks the account,
	// however slowly they came. Default 100.
	MaxTOTPFailures int `json:"max_totp_failures,omitempty"`
}

// runtime is what Start builds: everything that needs the open store.
type runtime struct {
	store *store.Bolt
	auth  *authcore.Service
	keys  *authcore.KeyRing
	csrf  *authcore.CSRF
	reg   *authcore.Regulator
	audit *audit.Log

	metrics *metrics // nil in the CLI

	denied deniedLog // authz.denied rows written lately

	// failRecord, when set (tests only), makes record fail for the rows
	// it returns an error for, as a broken audit store would: a row with
	// a change fails in the store transaction, after the change ran, so
	// the change is undone with it only if it was made there.
	failRecord atomic.Pointer[func(audit.Row) error]

	owner *App // the app that built it
}

// record appends an audit row durably, timing it for the metrics.
//
// A request loads its runtime once, when it starts. If a reload stops
// the app that built it before the request writes its row (Caddy stops a
// config's apps in no set order, so the old servers may still be
// finishing requests), the audit log is closed: the row then goes to the
// app that replaced it, on the same store, rather than being lost after
// the change it records was saved.
func (rt *runtime) record(ctx context.Context, row audit.Row) error {
	_, err := rt.recordChange(ctx, []audit.Row{row}, nil)
	return err
}

// recordChange writes rows, and with a change makes it in the same store
// transaction (audit.Log.RecordAllWith): all are stored, or none, even
// if Caddy dies. refused is the change's own error; err is the rows'
// failure. Either way nothing was stored.
func (rt *runtime) recordChange(ctx context.Context, rows []audit.Row, change func(tx any) error) (refused, err error) {
	// A request's context ends when its client hangs up, but the change
	// the rows tell of is made either way: the rows must be too.
	ctx = context.WithoutCancel(ctx)
	var with func(tx any) error
	if change != nil {
		// Run on the committer, which answers only after the last run.
		with = func(tx any) error {
			refused = change(tx)
			return refused
		}
	}
	err = rt.recordHere(ctx, rows, with)
	if errors.Is(err, audit.ErrClosed) {
		if next := replacement(rt.owner); next != nil && next != rt {
			err = next.recordHere(ctx, rows, with)
		}
	}
	if refused != nil {
		return refused, nil
	}
	if err != nil && rt.metrics != nil {
		rt.metrics.auditFailures.Inc()
	}
	return nil, err
}

func (rt *runtime) recordHere(ctx context.Context, rows []audit.Row, with func(tx any) error) error {
	var fail error
	if f := rt.failRecord.Load(); f != nil {
		for _, r := range rows {
			if fail = (*f)(r); fail != nil {
				break
			}
		}
	}
	start := time.Now()
	var err error
	switch {
	case fail != nil && with != nil:
		err = rt.audit.RecordAllWith(ctx, rows, func(tx any) error {
			if err := with(tx); err != nil {
				return err
			}
			return fail // the change made, then undone with the transaction
		})
	case fail != nil:
		err = fail
	case with != nil:
		err = rt.audit.RecordAllWith(ctx, rows, with)
	default:
		err = rt.audit.RecordAll(ctx, rows)
	}
	if err == nil && rt.metrics != nil {
		rt.metrics.auditAppend.Observe(time.Since(start).Seconds())
	}
	return err
}

// changeWithRow makes the change apply hands to its commit in one
// store transaction with row (authcore.Commit, audit.Log.RecordWith).
// refused is the change's own refusal (ErrNotFound, ErrLastAdmin), or
// apply's before it got that far (a password too short); err is the
// row's failure. Either way nothing was changed or written.
func (rt *runtime) changeWithRow(ctx context.Context, row audit.Row, apply func(authcore.Commit) error) (refused, err error) {
	return rt.changeWithRows(ctx, []audit.Row{row}, apply)
}

// changeWithRows is changeWithRow for a change that several rows tell
// of.
func (rt *runtime) changeWithRows(ctx context.Context, rows []audit.Row, apply func(authcore.Commit) error) (refused, err error) {
	refused = apply(func(change func(tx any) error) error {
		var changeErr error
		changeErr, err = rt.recordChange(ctx, rows, change)
		if changeErr != nil {
			return changeErr
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	return refused, nil
}

// deleteUser deletes the user id and writes row, its
// account.deletion_execute, in one transaction (changeWithRow).
func (rt *runtime) deleteUser(ctx context.Context, id, adminGroup string, row audit.Row) (refused, err error) {
	return rt.changeWithRow(ctx, row, func(commit authcore.Commit) error {
		return rt.auth.DeleteUserWith(id, adminGroup, commit)
	})
}

// login counts a sign-in attempt.
func (rt *runtime) login(method, result string) {
	if rt.metrics != nil {
		rt.metrics.logins.WithLabelValues(method, result).Inc()
	}
}

// CaddyModule returns the Caddy module information.
func (App) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "sigra",
		New: func() caddy.Module { return new(App) },
	}
}

// Provision checks and completes the configuration. It opens nothing, so
// `caddy validate` has no side effects and works while Caddy runs.
func (a *App) Provision(ctx caddy.Context) error {
	a.caddyCtx = ctx
	a.gateReads = new(gateReads)
	a.logger = ctx.Logger()
	a.slog = ctx.Slogger()
	if err := a.setDefaults(); err != nil {
		return err
	}
	m, err := newMetrics(ctx.GetMetricsRegistry(), a)
	if err != nil {
		return fmt.Errorf("registering metrics: %w", err)
	}
	a.metrics = m
	return nil
}

// setDefaults completes the configuration (shared by Provision and the
// CLI, which reads the same config without running Caddy).
func (a *App) setDefaults() error {
	if a.logger == nil {
		a.logger = zap.NewNop()
	}
	if a.clock == nil {
		a.clock = newClock()
	}
	a.life = &lifecycle{ready: make(chan struct{})}
	if a.Storage == nil {
		a.Storage = &StorageConfig{}
	}
	if a.Storage.Backend == "" {
		a.Storage.Backend = "bbolt"
	}
	if a.Storage.Backend != "bbolt" {
		return fmt.Errorf("storage: unknown backend %q (this build supports bbolt)", a.Storage.Backend)
	}
	// A store in another place because a variable was not set, the
	// default one or a path with a part missing, would be a second, empty
	// store: every placeholder in the path must have a value.
	path, err := caddy.NewReplacer().ReplaceOrErr(a.Storage.Path, true, true)
	if err != nil {
		return fmt.Errorf("storage path %s: %w: is the environment variable set for this process?", a.Storage.Path, err)
	}
	a.storagePath = strings.TrimSpace(path)
	switch {
	case a.storagePath == "" && a.Storage.Path != "":
		return fmt.Errorf("storage path %q is blank", a.Storage.Path)
	case strings.HasPrefix(a.storagePath, "~"):
		// Only a shell expands ~: this would be a directory named "~"
		// in the working directory, with a new, empty store in it.
		return fmt.Errorf("storage path %s starts with ~, which Caddy does not expand: write the whole path ({env.HOME}/… works)", a.storagePath)
	case a.storagePath == "":
		a.storagePath = filepath.Join(caddy.AppDataDir(), "sigra", "sigra.db")
	}
	if a.Session == nil {
		a.Session = &SessionConfig{}
	}
	if a.Keys == nil {
		a.Keys = &KeysConfig{}
	}
	if a.Keys.Algorithm == "" {
		a.Keys.Algorithm = authcore.AlgEdDSA
	}
	// The signing key's path, as the store's: every placeholder in it
	// must have a value.
	if a.signingKeyPath, err = caddy.NewReplacer().ReplaceOrErr(a.Keys.SigningKey, true, true); err != nil {
		return fmt.Errorf("keys: signing_key %s: %w: is the environment variable set for this process?", a.Keys.SigningKey, err)
	}
	// The audience too: taken as written, {env.AUD} would be signed as
	// it stands, and no verifier would accept an assertion.
	if a.assertionAudience, err = caddy.NewReplacer().ReplaceOrErr(a.AssertionAudience, true, true); err != nil {
		return fmt.Errorf("assertion_audience %s: %w: is the environment variable set for this process?", a.AssertionAudience, err)
	}
	if a.Prefix == "" {
		a.Prefix = DefaultPrefix
	}
	if a.AdminGroup == "" {
		a.AdminGroup = "admins"
	}
	if a.BootstrapAdmin == "" {
		a.BootstrapAdmin = "admin@localhost"
	}
	for _, al := range a.HeaderAliases {
		if al != "remote" {
			return fmt.Errorf("header_aliases: unknown alias family %q (known: remote)", al)
		}
		a.remoteAliases = true
	}
	switch a.PathParams {
	case "", "refuse":
	case "allow":
		a.pathParams = true
	default:
		return fmt.Errorf("path_params: %q (want allow or refuse)", a.PathParams)
	}
	return nil
}

func (a *App) adminMFAMaxAge() time.Duration {
	if a.AdminMFAMaxAge > 0 {
		return time.Duration(a.AdminMFAMaxAge)
	}
	return 30 * time.Minute
}

// checkPrefix accepts a portal prefix: a path of at least one segment of
// unreserved characters, such as /.sigra or /auth/portal.
func checkPrefix(p string) error {
	ok := len(p) >= 2 && p[0] == '/' && p[len(p)-1] != '/'
	for _, seg := range strings.Split(p[min(1, len(p)):], "/") {
		ok = ok && seg != "" && seg != "." && seg != ".." &&
			strings.Trim(seg, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~") == ""
	}
	if !ok {
		return fmt.Errorf("prefix: %q must be a path such as /.sigra: segments of letters, digits, - . _ ~, no trailing /", p)
	}
	return nil
}

// validLabels reports whether the host name's labels are 1 to 63
// characters, none starting or ending with a hyphen.
func validLabels(name string) bool {
	for _, l := range strings.Split(name, ".") {
		if l == "" || len(l) > 63 || strings.HasPrefix(l, "-") || strings.HasSuffix(l, "-") {
			return false
		}
	}
	return true
}

// checkRedirectHost accepts an allowed_redirect_hosts entry: a host name
// or IP address, with an optional port, exactly as a URL's host part.
// It also becomes a CSP form-action source, so nothing else may pass.
func checkRedirectHost(h string) error {
	u, err := url.Parse("https://" + h)
	ok := err == nil && u.Host == h && u.Path == "" && u.User == nil && !u.ForceQuery && u.RawQuery == "" && u.Fragment == ""
	if ok {
		name := u.Hostname()
		ok = name != "" && (net.ParseIP(name) != nil ||
			strings.Trim(strings.ToLower(name), "abcdefghijklmnopqrstuvwxyz0123456789-.") == "" && validLabels(name))
	}
	if ok && u.Port() != "" {
		n, err := strconv.Atoi(u.Port())
		ok = err == nil && n >= 1 && n <= 65535
	}
	if !ok {
		return fmt.Errorf("allowed_redirect_hosts: %q is not a host name (with an optional port), such as docs.example.com or docs.example.com:8443", h)
	}
	return nil
}

// checkAudience refuses an assertion_audience that is not one value: a
// verifier compares aud whole.
func checkAudience(aud string) error {
	if aud != "" && (strings.TrimSpace(aud) == "" || strings.ContainsFunc(aud, unicode.IsSpace) || strings.ContainsFunc(aud, unicode.IsControl)) {
		return fmt.Errorf("assertion_audience: %q must be one value without spaces, such as https://app.example.com", aud)
	}
	return nil
}

// checkAdminHost accepts an admin_hosts entry: a host name or IP
// address, lower case, without a port (a session's host is compared
// without one).
func checkAdminHost(h string) error {
	if ip := net.ParseIP(h); ip != nil && strings.Contains(h, ":") {
		// An IPv6 address, bare, as a request's host compares once its
		// brackets are gone; in one spelling, as browsers write it.
		if h != ip.String() {
			return fmt.Errorf("admin_hosts: write the IPv6 address %q as %s, without brackets", h, ip)
		}
		return nil
	}
	if h != authcore.NormalizeHost(h) || checkRedirectHost(h) != nil || strings.HasPrefix(h, "[") {
		return fmt.Errorf("admin_hosts: %q is not a host name without a port, in lower case, such as admin.example.com", h)
	}
	return nil
}

// adminHost reports whether the admin pages and API are served for a
// request to hostport.
func (a *App) adminHost(hostport string) bool {
	return len(a.AdminHosts) == 0 || slices.Contains(a.AdminHosts, authcore.NormalizeHost(hostport))
}

// Validate checks the configuration without side effects.
func (a *App) Validate() error {
	if fi, err := os.Stat(a.storagePath); err == nil && fi.IsDir() {
		return fmt.Errorf("storage path %s is a directory: name the store file in it (%s)", a.storagePath, filepath.Join(a.storagePath, "sigra.db"))
	}
	if a.Prefix != "" { // "" is the default, once provisioned
		if err := checkPrefix(a.Prefix); err != nil {
			return err
		}
	}
	for _, h := range a.AdminHosts {
		if err := checkAdminHost(h); err != nil {
			return err
		}
	}
	for _, h := range a.AllowedRedirectHosts {
		if err := checkRedirectHost(h); err != nil {
			return err
		}
	}
	if a.AdminGroup != "" { // "" until setDefaults
		if err := checkRequiredGroup(a.AdminGroup); err != nil {
			return fmt.Errorf("admin_group: %w", err)
		}
	}
	if a.Keys.Algorithm != authcore.AlgEdDSA && a.Keys.Algorithm != authcore.AlgES256 {
		return fmt.Errorf("keys: algorithm %q (want EdDSA or ES256)", a.Keys.Algorithm)
	}
	if a.Keys.EncryptionKey != "" {
		if _, err := a.configuredEncryptionKey(); err != nil {
			return err
		}
	}
	if a.signingKeyPath != "" {
		// caddy validate reads the file as the start will, so a missing
		// or wrong key fails here and not after the store is made.
		if err := authcore.CheckSigningKeyFile(a.signingKeyPath, a.Keys.Algorithm); err != nil {
			return fmt.Errorf("keys: %w", err)
		}
		warnLooseKeyFile(a.logger, "signing_key", a.signingKeyPath)
	}
	if a.Keys.EncryptionKey == "" && a.storagePath != "" {
		// The generated key's file, when there is one yet (made 0600).
		warnLooseKeyFile(a.logger, "encryption key", a.encryptionKeyFile())
	}
	if a.storagePath != "" {
		// A path to another file is refused here, by caddy validate too,
		// not only when Caddy starts, and is not told to be chmodded.
		sealed, err := store.CheckStore(a.storagePath, secretCSRFKey)
		if err != nil {
			return err
		}
		if err := a.checkSealedWith(sealed); err != nil {
			return err
		}
		// Made 0600 too; a copy restored with cp or a mounted volume may
		// not be. It holds the password hashes and the audit trail.
		warnLooseKeyFile(a.logger, "store", a.storagePath)
	}
	if a.Session.Idle < 0 || a.Session.Lifetime < 0 || a.Session.PendingLifetime < 0 {
		return errors.New("session: durations must be positive")
	}
	if _, err := a.Session.check(); err != nil {
		return err
	}
	if a.BootstrapAdmin != "off" {
		if _, err := authcore.NormalizeEmail(a.BootstrapAdmin); err != nil {
			return fmt.Errorf("bootstrap_admin: %w", err)
		}
	}
	if r := a.Regulation; r != nil && (r.MaxRetries < 0 || r.MaxRetriesPerIP < 0 || r.FindTime < 0 || r.BanTime < 0 || r.MaxTOTPFailures < 0) {
		return errors.New("regulation: values must not be negative")
	}
	if r := a.Regulation; r != nil && (r.MaxRetries > maxCount || r.MaxRetriesPerIP > maxCount || r.MaxTOTPFailures > maxCount) {
		return fmt.Errorf("regulation: counts must be at most %d", maxCount)
	}
	if a.Keys.AssertionTTL < 0 {
		return errors.New("keys: assertion_ttl must not be negative")
	}
	if a.AdminMFAMaxAge < 0 {
		return errors.New("admin_mfa_max_age must not be negative")
	}
	type option struct {
		name string
		d    caddy.Duration
	}
	durations := []option{{"idle", a.Session.Idle}, {"lifetime", a.Session.Lifetime}, {"pending_lifetime", a.Session.PendingLifetime},
		{"assertion_ttl", a.Keys.AssertionTTL}, {"admin_mfa_max_age", a.AdminMFAMaxAge}}
	if r := a.Regulation; r != nil {
		durations = append(durations, option{"find_time", r.FindTime}, option{"ban_time", r.BanTime})
	}
	for _, o := range durations {
		if o.d == 0 { // the default
			continue
		}
		if err := checkFloor(o.name, time.Duration(o.d)); err != nil {
			return err
		}
	}
	if err := checkAudience(a.assertionAudience); err != nil {
		return err
	}
	hooks, err := a.Audit.validate()
	if err != nil {
		return err
	}
	warnWebhooks(a.logger, hooks)
	return nil
}

// warnWebhooks warns of webhooks that work, and are not what an
// operator would choose knowingly: rows (client addresses, user agents,
// user ids) sent over plain http beyond this machine, and a secret
// shared by two receivers, either of which could then replay the
// deliveries it gets to the other within the signature's five minutes
// (the signature does not name the receiver).
func warnWebhooks(logger *zap.Logger, hooks []audit.WebhookConfig) {
	bySecret := make(map[string]string, len(hooks))
	for _, h := range hooks {
		if u, err := url.Parse(h.URL); err == nil && u.Scheme == "http" && !loopbackHost(u.Hostname()) {
			logger.Warn("webhook over plain http to another machine: its rows travel unencrypted; use https",
				zap.String("url", audit.RedactURL(h.URL)))
		}
		if other, ok := bySecret[string(h.Secret)]; ok {
			logger.Warn("two webhooks share a secret: either receiver could replay its deliveries to the other; give each its own",
				zap.String("url", audit.RedactURL(h.URL)), zap.String("other_url", other))
			continue
		}
		bySecret[string(h.Secret)] = audit.RedactURL(h.URL)
	}
}

// loopbackHost says whether host (no port) names this machine.
func loopbackHost(host string) bool {
	if ip := net.ParseIP(host); ip != nil {
		return ip.IsLoopback()
	}
	host = strings.ToLower(strings.TrimSuffix(host, "."))
	return host == "localhost" || strings.HasSuffix(host, ".localhost")
}

// newClock makes the clock of new apps; tests substitute a fake one.
var newClock = func() clock.Clock { return clock.Real{} }

// dbPool shares one open bbolt file per path across config reloads: the
// old and the new config run side by side for a moment, and bbolt allows
// one opener per process.
var dbPool = caddy.NewUsagePool()

// storePoolKey is the key a's store goes under in dbPool: the key of a
// store open already on the file a's path names (a reload that writes
// the path another way: through a symbolic link, with ./ or //), else
// the path. Under a key of its own, the reload would open the file a
// second time and be refused as locked "by another process".
func (a *App) storePoolKey() string {
	key := a.storagePath
	dbPool.Range(func(k, v any) bool {
		if db, ok := v.(pooledDB); ok && db.IsFile(a.storagePath) {
			key, _ = k.(string)
			return false
		}
		return true
	})
	return key
}

// startLockWait is how long a start waits for a store another process
// holds, after the first second: as long as a command working offline
// may take on a large store, well within a service manager's start
// timeout (systemd's is 90 s).
const startLockWait = 30 * time.Second

type pooledDB struct {
	*store.Bolt
	peers *authcore.Peers // the runtimes on it (a reload runs two)
}

func (p pooledDB) Destruct() error { return p.Close() }

// Start opens the store and builds the runtime.
func (a *App) Start() error {
	a.poolKey = a.storePoolKey()
	val, _, err := dbPool.LoadOrNew(a.poolKey, func() (caddy.Destructor, error) {
		st, err := store.OpenBolt(a.storagePath, store.BoltOptions{})
		if errors.Is(err, store.ErrLocked) {
			// A caddy sigra command working on the store offline (a
			// backup, an export) holds it for as long as it takes: a
			// start meanwhile, at boot, say, waits rather than fail
			// every site.
			a.logger.Warn("the store is locked by another process; waiting for it", zap.String("path", a.storagePath), zap.Duration("at_most", startLockWait))
			st, err = store.OpenBolt(a.storagePath, store.BoltOptions{LockTimeout: startLockWait})
		}
		if err != nil {
			return nil, err
		}
		return pooledDB{st, new(authcore.Peers)}, nil
	})
	if err != nil {
		return fmt.Errorf("sigra: %w", err)
	}
	st, peers := val.(pooledDB).Bolt, val.(pooledDB).peers
	if _, serr := os.Stat(a.storagePath); serr == nil && !st.IsFile(a.storagePath) {
		// The same path, another file (a link that now leads elsewhere,
		// a file put in the store's place): the store open is not it.
		_, _ = dbPool.Delete(a.poolKey)
		return fmt.Errorf("sigra: storage %s: the path now names another file than the store open under it (a link changed, or a file was put in its place); restart Caddy to open it", a.storagePath)
	}
	rt, err := a.buildRuntime(st)
	if err != nil {
		_, _ = dbPool.Delete(a.poolKey)
		return fmt.Errorf("sigra: %w", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	l := a.life
	l.cancel = cancel
	l.rtForStop = rt
	l.wg.Add(2)
	go func() {
		defer l.wg.Done()
		rt.auth.Run(ctx)
	}()
	rt.auth.Join(peers)
	l.rt.Store(rt)
	close(l.ready)
	l.prev.Store(running.Swap(a))
	// Outside Caddy's config loading (the CLI, tests) there is no config
	// to wait for.
	loaded := a.caddyCtx.Context != nil
	if !loaded {
		a.inForce(ctx, rt)
	}
	go func() {
		defer l.wg.Done()
		if loaded {
			if !a.awaitForce(ctx) {
				return
			}
			a.inForce(ctx, rt)
		}
		a.warnNoAdmin(rt) // reads every user: off the start's path
		a.upkeep(ctx, rt)
	}()
	a.logger.Info("sigra started", zap.String("storage", a.storagePath), zap.String("assertion_kid", rt.keys.ActiveKeyID()))
	a.warnUnservedAdminHosts()
	return nil
}

// saveKeys stores what the key ring holds unsaved, through save (its
// SaveWith, or PruneWith): a change of algorithm or signing_key, which
// rotates once the config is in force, is stored with its
// admin.keys.rotate row as keys rotate stores one, and a change of the
// key that signs is logged ("sigra started" named the one before).
func (a *App) saveKeys(ctx context.Context, rt *runtime, save func(context.Context, authcore.KeyCommit) error) error {
	retired, commit := rt.keys.ActiveKeyID(), rt.keyCommit(ctx, nil, "", "config")
	err := save(ctx, func(previous, active authcore.KeyInfo, change func(tx any) error) error {
		// A new signing_key file's key signed from the start: the
		// one it retired is the stored one.
		retired = previous.KID
		return commit(previous, active, change)
	})
	if now := rt.keys.ActiveKeyID(); err == nil && now != retired {
		a.logger.Info("the assertion key changed with the config", zap.String("assertion_kid", now), zap.String("retired_kid", retired))
	}
	return err
}

// awaitForce waits until the config that holds a is the one Caddy runs,
// and reports whether it is; false when Caddy refuses it first: it stops
// a (another app failed to start after this one), or cancels the
// config's context (a failure after the apps started, such as a bad
// remote admin setting), and then cleans a up (Cleanup).
func (a *App) awaitForce(ctx context.Context) bool {
	t := time.NewTicker(10 * time.Millisecond)
	defer t.Stop()
	warn := time.NewTimer(15 * time.Second)
	defer warn.Stop()
	for {
		if app, err := caddy.ActiveContext().AppIfConfigured("sigra"); err == nil && app == any(a) {
			return true
		}
		select {
		case <-ctx.Done():
			return false
		case <-a.caddyCtx.Done():
			return false
		case <-warn.C:
			a.logger.Warn("sigra: Caddy has not put this config in force yet; audit retention, webhook delivery and a new signing key's storing wait for it")
		case <-t.C:
		}
	}
}

// inForce starts what changes the store on its own, once a's config is
// in force: the first admin of an empty store, audit retention (which
// prunes at once, by this config's retention) and webhook delivery, and
// saving a change of the active assertion key. A config Caddy refuses
// must leave the store as it was: a first admin made by a start that
// then failed would have its only password printed by that failed run.
func (a *App) inForce(ctx context.Context, rt *runtime) {
	a.life.prev.Store(nil)
	if err := a.bootstrapAdmin(ctx, rt); err != nil {
		a.logger.Error("making the first admin failed; the next start tries again", zap.Error(err))
	}
	if err := a.saveKeys(ctx, rt, rt.keys.SaveWith); err != nil {
		a.logger.Error("storing the assertion keys failed; the key that signed goes on signing, and storing is tried again every 5 minutes", zap.Error(err))
	}
	rt.audit.Start(ctx)
}

func (a *App) buildRuntime(st *store.Bolt) (*runtime, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	box, err := a.encryptionBox(ctx, st)
	if err != nil {
		return nil, err
	}
	keys, err := authcore.LoadKeyRing(ctx, a.clock, st, box, authcore.KeyRingConfig{
		Algorithm: a.Keys.Algorithm,
		PEMFile:   a.signingKeyPath,
		TTL:       a.assertionTTL(),
		// Start saves a change once the config is in force, with its
		// admin.keys.rotate row; a CLI run never does: the next start
		// (or the running Caddy's reload) makes it, row and all.
		DeferSave: true,
	})
	if err != nil {
		return nil, a.wrongKey(err, box)
	}
	csrfKey, err := loadOrCreateSecret(ctx, st, box, secretCSRFKey, 32)
	if err != nil {
		return nil, a.wrongKey(err, box)
	}
	cfg := authcore.Config{
		Idle:            time.Duration(a.Session.Idle),
		Lifetime:        time.Duration(a.Session.Lifetime),
		PendingLifetime: time.Duration(a.Session.PendingLifetime),
		PasswordChecks:  &processCounts.passwordChecks,
	}
	if a.Regulation != nil {
		cfg.MaxTOTPFailures = a.Regulation.MaxTOTPFailures
	}
	auth, err := authcore.NewService(a.slog, a.clock, st, box, cfg)
	if err != nil {
		return nil, err
	}
	var rc authcore.RegulationConfig
	if r := a.Regulation; r != nil {
		rc = authcore.RegulationConfig{MaxRetries: r.MaxRetries, MaxRetriesPerIP: r.MaxRetriesPerIP,
			FindTime: time.Duration(r.FindTime), BanTime: time.Duration(r.BanTime)}
	}
	hooks, err := a.Audit.webhooks()
	if err != nil {
		return nil, err
	}
	auditRows := slog.New(zapslog.NewHandler(a.logger.Core(), zapslog.WithName("sigra.audit")))
	log, err := audit.New(auditRows, a.clock, st, audit.Options{
		Webhooks: hooks, Retention: a.Audit.retention(), ErrorLog: a.slog,
		Delivery: audit.DeliveryOptions{Failures: &processCounts.webhookFailures},
	})
	if err != nil {
		return nil, err
	}
	return &runtime{store: st, auth: auth, keys: keys, csrf: authcore.NewCSRF(csrfKey),
		reg: authcore.NewRegulator(a.clock, st, rc), audit: log, metrics: a.metrics, owner: a}, nil
}

// assertionTTL is the assertions' lifetime: assertion_ttl (0: the key
// ring's default), or the sessions' idle timeout when that is shorter,
// so that no assertion outlives an idle session it was signed for (each
// is capped at its session's absolute end as well).
func (a *App) assertionTTL() time.Duration {
	ttl, idle := time.Duration(a.Keys.AssertionTTL), time.Duration(a.Session.Idle)
	if ttl <= 0 {
		ttl = authcore.DefaultAssertionTTL
	}
	if idle <= 0 {
		idle = authcore.DefaultIdle
	}
	return min(ttl, idle)
}

// configuredEncryptionKey decodes keys.encryption_key after its
// placeholders ({env.NAME}). A placeholder that comes out empty is named:
// sealing with no key, or a new one, because a variable was not set would
// lock away every secret sealed before.
func (a *App) configuredEncryptionKey() ([]byte, error) {
	raw := a.Keys.EncryptionKey
	val := caddy.NewReplacer().ReplaceKnown(raw, "")
	if strings.TrimSpace(val) == "" {
		return nil, fmt.Errorf("keys: encryption_key %s is empty: is the environment variable set for this process?", placeholderName(raw))
	}
	k, err := seal.ParseKey(val)
	if err != nil {
		return nil, fmt.Errorf("keys: encryption_key %s: %w", placeholderName(raw), err)
	}
	return k, nil
}

// placeholderName shows a configured value in an error only when it is
// placeholders alone ({env.KEY}, {env.A}{env.B}); a literal key, or the
// literal part of one ({env.A}text{env.B}), stays out of logs.
func placeholderName(raw string) string {
	for rest := raw; rest != ""; {
		end := strings.IndexByte(rest, '}')
		if !strings.HasPrefix(rest, "{") || end < 0 || strings.Contains(rest[1:end], "{") {
			return "(the configured value)"
		}
		rest = rest[end+1:]
	}
	if raw == "" {
		return "(the configured value)"
	}
	return raw
}

// encryptionBox builds the box that seals secrets at rest, from the
// configured key or a key file generated next to the store. A store that
// has started before (it holds the CSRF key, sealed) and whose key file is
// gone gets no new key: one would read none of its secrets, and would
// have to be overwritten with the old one once found.
func (a *App) encryptionBox(ctx context.Context, st authcore.Store) (*seal.Box, error) {
	if a.Keys.EncryptionKey != "" {
		k, err := a.configuredEncryptionKey()
		if err != nil {
			return nil, err
		}
		return seal.New(k)
	}
	path := a.encryptionKeyFile()
	if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
		_, serr := st.GetSecret(ctx, secretCSRFKey)
		switch {
		case serr == nil:
			return nil, a.keyFileMissing(path)
		case !errors.Is(serr, authcore.ErrNotFound):
			return nil, serr
		}
	}
	k, err := seal.LoadOrCreateKeyFile(path)
	if err != nil {
		return nil, err
	}
	return seal.New(k) // Validate warned if the file is open to others
}

// keyFileMissing is the error for a store holding sealed secrets whose
// generated key file (path) is gone.
func (a *App) keyFileMissing(path string) error {
	return fmt.Errorf("the encryption key file %s is missing, but the store %s holds secrets sealed with it: "+
		"restore the file (from where you back up the store; it is not in the store's backups) and start again. "+
		"No new key was made: it could not read them. Lost for good, it takes the signing keys and the "+
		"authenticator apps with it: move the store aside to start a new one", path, a.storagePath)
}

// checkSealedWith is, for caddy validate, the start's check of the
// encryption key against the store, made when no Caddy has the store
// open (sealed, its CSRF key as stored, read by store.CheckStore; nil
// otherwise): the key file must be there, and the key must open it.
func (a *App) checkSealedWith(sealed []byte) error {
	if sealed == nil {
		return nil
	}
	var key []byte
	var err error
	if a.Keys.EncryptionKey != "" {
		key, err = a.configuredEncryptionKey()
	} else {
		path := a.encryptionKeyFile()
		if key, err = seal.ReadKeyFile(path); errors.Is(err, os.ErrNotExist) {
			return a.keyFileMissing(path)
		}
	}
	if err != nil {
		return err
	}
	box, err := seal.New(key)
	if err != nil {
		return err
	}
	if _, err := box.Open(sealed, []byte("sigra:"+secretCSRFKey)); err != nil {
		return a.wrongKey(fmt.Errorf("secret %s: %w (encryption key id %s)", secretCSRFKey, err, box.ID()), box)
	}
	return nil
}

// wrongKey explains a secret of the store that the encryption key cannot
// open: which key was used, and from where.
func (a *App) wrongKey(err error, box *seal.Box) error {
	if !errors.Is(err, seal.ErrOpen) {
		return err
	}
	from := "the key file " + a.encryptionKeyFile()
	if a.Keys.EncryptionKey != "" {
		from = "keys { encryption_key " + placeholderName(a.Keys.EncryptionKey) + " }"
	}
	return fmt.Errorf("%w: the store %s was sealed with another encryption key than this one (id %s, from %s); configure the one it was made with",
		err, a.storagePath, box.ID(), from)
}

// encryptionKeyFile is where the encryption key is generated and kept
// when none is configured: next to the store.
func (a *App) encryptionKeyFile() string {
	return filepath.Join(filepath.Dir(a.storagePath), "encryption.key")
}

// warnLooseKeyFile warns when every user can read a key file or the
// store, or its group can write it (as ssh does for private keys). A
// group may read it: root:caddy 0640 is a usual way to hand a key to
// Caddy. It does not refuse: mounted secrets are often 0644 by default,
// and a refusal there would be an outage. The warning says what to run.
func warnLooseKeyFile(logger *zap.Logger, what, path string) {
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm()&0o027 == 0 {
		return
	}
	logger.Warn(what+" file is open to other users; restrict it to Caddy",
		zap.String("path", path),
		zap.String("mode", fmt.Sprintf("%#o", fi.Mode().Perm())),
		zap.String("fix", "chmod o-rwx,g-w "+path))
}

// secretCSRFKey is the store's secret that keys the CSRF tokens, made
// at its first start.
const secretCSRFKey = "csrf_key"

// loadOrCreateSecret returns a sealed random secret kept in the store.
func loadOrCreateSecret(ctx context.Context, st authcore.Store, box *seal.Box, name string, n int) ([]byte, error) {
	aad := []byte("sigra:" + name)
	raw, err := st.GetSecret(ctx, name)
	if errors.Is(err, authcore.ErrNotFound) {
		fresh := make([]byte, n)
		_, _ = rand.Read(fresh)
		raw, err = st.PutSecret(ctx, name, box.Seal(fresh, aad), true)
	}
	if err != nil {
		return nil, fmt.Errorf("secret %s: %w", name, err)
	}
	v, err := box.Open(raw, aad)
	if err != nil {
		return nil, fmt.Errorf("secret %s: %w (encryption key id %s)", name, err, box.ID())
	}
	return v, nil
}

// warnNoAdmin warns when no enabled user is in admin_group (bootstrap_admin
// off, say): the admin pages and API are closed to everyone until the CLI
// makes one.
func (a *App) warnNoAdmin(rt *runtime) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if any, err := rt.store.HasOtherMember(ctx, a.AdminGroup, ""); err == nil && !any {
		a.logger.Warn("no enabled user is in admin_group, so nobody can use the admin pages and API: make one with caddy sigra users add --admin (or users groups --admin)",
			zap.String("admin_group", a.AdminGroup))
	}
}

// bootstrapAdmin creates the first admin with a random password when the
// store has no users, and prints the credentials once.
func (a *App) bootstrapAdmin(ctx context.Context, rt *runtime) error {
	if a.BootstrapAdmin == "off" {
		return nil
	}
	n, err := rt.store.CountUsers(ctx)
	if err != nil {
		return err
	}
	if n > 0 {
		a.logger.Info("the store has users, so no first admin is made: its password was printed at the first start "+
			"(caddy sigra users passwd sets a new one)", zap.String("bootstrap_admin", a.BootstrapAdmin), zap.Int("users", n))
		return nil
	}
	pw := authcore.RandomPassword()
	u, err := rt.auth.NewUserRecord(authcore.NewUser{
		Email: a.BootstrapAdmin, Name: "Administrator", Groups: []string{a.AdminGroup},
		Password: pw, EmailVerified: true,
	})
	if err != nil {
		return fmt.Errorf("creating the first admin: %w", err)
	}
	// Every admin made is a row, this one by the gateway itself, in the
	// user's own transaction: a start killed during the commit leaves
	// neither, and the next start makes the admin again.
	ev := event{action: "admin.user.add", actorType: audit.ActorSystem, subject: u.ID, outcome: "success", meta: groupsMeta(u.Groups, nil)}
	ev.meta["bootstrap"] = "true"
	refused, err := rt.changeWithRow(ctx, rowFor(nil, ev), func(commit authcore.Commit) error {
		return rt.auth.CreateUserWith(u, commit)
	})
	if err == nil {
		err = refused
	}
	if err != nil {
		return fmt.Errorf("creating the first admin (nothing was stored): %w", err)
	}
	// The password at once, the moment the user is stored.
	a.logger.Warn("created the first admin user; its password is printed once on stderr",
		zap.String("email", u.Email), zap.String("user_id", u.ID))
	fmt.Fprintf(os.Stderr, "\n"+
		"  ┌ Sigra: first admin user created ─────────────────────────\n"+
		"  │ email:    %s\n"+
		"  │ password: %s\n"+
		"  │ shown once; to change it:\n"+
		"  │   %s\n"+
		"  └───────────────────────────────────────────────────────────\n\n", u.Email, pw, passwdCommand(os.Args, u.Email))
	return nil
}

// upkeep drops expired regulation state, and retired assertion keys
// past their last assertion, every few minutes.
func (a *App) upkeep(ctx context.Context, rt *runtime) {
	defer func() {
		if r := recover(); r != nil {
			a.logger.Error("upkeep panicked", zap.Any("panic", r))
		}
	}()
	t := time.NewTicker(5 * time.Minute)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if _, err := rt.reg.Prune(ctx); err != nil {
				a.logger.Warn("pruning regulation state", zap.Error(err))
			}
			if err := a.saveKeys(ctx, rt, rt.keys.PruneWith); err != nil {
				a.logger.Warn("pruning retired assertion keys", zap.Error(err))
			}
			if err := rt.store.FileGone(); err != nil {
				a.logger.Error("the store is not where it was opened", zap.Error(err))
			}
		}
	}
}

// Cleanup stops a if Caddy did not: when it refuses a config after its
// apps started, it cancels the config's context without stopping them.
func (a *App) Cleanup() error { return a.Stop() }

// stopping, when set (tests only), runs as a started app begins to
// stop: its replacement, if any, runs beside it.
var stopping func(*App)

// Stop ends background work and releases the store.
func (a *App) Stop() error {
	l := a.life
	if l == nil || l.cancel == nil {
		return nil
	}
	if h := stopping; h != nil {
		h(a)
	}
	// A refused config's app hands back to the one that ran before it,
	// if that one still runs.
	prev := l.prev.Swap(nil)
	if prev != nil && prev.life.rt.Load() == nil {
		prev = nil
	}
	running.CompareAndSwap(a, prev)
	l.cancel()
	l.wg.Wait()
	l.cancel = nil
	l.rt.Store(nil)
	l.rtForStop.auth.Leave()
	// Sockets and event streams that outlive this config (event
	// streams; upgraded connections under reverse_proxy's
	// stream_close_delay) watch their sessions through the next one.
	l.rtForStop.auth.WakeWatches()
	if err := l.rtForStop.audit.Close(); err != nil {
		a.logger.Error("closing the audit log", zap.Error(err))
	}
	_, err := dbPool.Delete(a.poolKey)
	a.logger.Info("sigra stopped", zap.String("storage", a.storagePath), zap.Error(err))
	return err
}

// runtime returns the started runtime, waiting briefly if a request
// arrives while the app is still starting (Caddy starts apps in no set
// order, so on a reload the new servers can take requests first). A
// request still in flight on the servers of a config that a reload has
// already stopped is served by the app that replaced this one: the
// store is the same, and the new config is the one in force. nil means
// unavailable.
func (a *App) runtime(ctx context.Context) *runtime {
	l := a.life
	if rt := l.rt.Load(); rt != nil {
		return rt
	}
	select {
	case <-l.ready:
		return replacement(a)
	default:
	}
	t := time.NewTimer(5 * time.Second)
	defer t.Stop()
	select {
	case <-l.ready:
	case <-ctx.Done():
	case <-t.C:
	}
	if rt := l.rt.Load(); rt != nil {
		return rt
	}
	return replacement(a)
}

// runtimeNow is runtime without the wait: nil while a is starting.
func (a *App) runtimeNow() *runtime {
	if rt := a.life.rt.Load(); rt != nil {
		return rt
	}
	return replacement(a)
}

// replacement is the runtime of the app started after a, on the same
// store, or nil.
func replacement(a *App) *runtime {
	b := running.Load()
	if b == nil || b == a || b.poolKey != a.poolKey {
		return nil
	}
	return b.life.rt.Load()
}

// Interface guards
var (
	_ caddy.App          = (*App)(nil)
	_ caddy.Provisioner  = (*App)(nil)
	_ caddy.Validator    = (*App)(nil)
	_ caddy.CleanerUpper = (*App)(nil)
)
