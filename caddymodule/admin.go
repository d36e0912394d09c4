package caddymodule

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"

	"github.com/sigra-auth/caddy-sigra/audit"
	"github.com/sigra-auth/caddy-sigra/authcore"
)

func init() {
	caddy.RegisterModule(adminAPI{})
}

// running is the started sigra app of this process, for the admin API.
// During a reload the new app replaces the old one before the old one
// stops; the old one clears it only if it is still its own.
var running atomic.Pointer[App]

// adminAPI serves /sigra/ on Caddy's admin endpoint, so the CLI can manage
// users while Caddy holds the store's file lock.
type adminAPI struct{}

// CaddyModule returns the Caddy module information.
func (adminAPI) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "admin.api.sigra",
		New: func() caddy.Module { return new(adminAPI) },
	}
}

// Routes returns the admin routes.
func (adminAPI) Routes() []caddy.AdminRoute {
	return []caddy.AdminRoute{
		{Pattern: "/sigra/users", Handler: caddy.AdminHandlerFunc(handleAdminUsers)},
		{Pattern: "/sigra/audit/export", Handler: caddy.AdminHandlerFunc(handleAdminAuditExport)},
		{Pattern: "/sigra/audit/replay", Handler: caddy.AdminHandlerFunc(handleAdminAuditReplay)},
		{Pattern: "/sigra/keys", Handler: caddy.AdminHandlerFunc(handleAdminKeys)},
		{Pattern: "/sigra/bans", Handler: caddy.AdminHandlerFunc(handleAdminBans)},
		{Pattern: "/sigra/backup", Handler: caddy.AdminHandlerFunc(handleAdminBackup)},
	}
}

// runningRuntime returns the running app and its runtime.
func runningRuntime() (*App, *runtime, error) {
	a := running.Load()
	var rt *runtime
	if a != nil {
		rt = a.life.rt.Load()
	}
	if rt == nil {
		return nil, nil, caddy.APIError{HTTPStatus: http.StatusServiceUnavailable, Err: errors.New("the sigra app is not running")}
	}
	return a, rt, nil
}

// runningFor returns the running app and its runtime for a CLI request,
// which must name the store it means: query parameter store, the absolute
// path of the store file as the CLI resolved it from its config. A CLI
// whose config names one store but the admin address of a Caddy that runs
// another would otherwise read, or change, the wrong store's users. A
// request without the parameter is refused too: the CLI is the same
// binary as the server, so only an outdated or hand-made client omits it,
// and accepting it would be exactly the unchecked case.
func runningFor(r *http.Request) (*App, *runtime, error) {
	a, rt, err := runningRuntime()
	if err != nil {
		return nil, nil, err
	}
	q := r.URL.Query()
	if name := repeatedParam(q); name != "" {
		return nil, nil, caddy.APIError{HTTPStatus: http.StatusBadRequest, Err: fmt.Errorf("the query parameter %q is given more than once", name)}
	}
	want := q.Get("store")
	if want == "" {
		return nil, nil, caddy.APIError{HTTPStatus: http.StatusBadRequest,
			Err: errors.New("the request names no store (query parameter store, the absolute path of the Sigra store file it is meant for): use caddy sigra of the same build as this Caddy")}
	}
	if !filepath.IsAbs(want) {
		return nil, nil, caddy.APIError{HTTPStatus: http.StatusBadRequest, Err: fmt.Errorf("store %q is not an absolute path", want)}
	}
	// The CLI sends the path resolved; resolved again here, a path from
	// any client is compared as the system opens it.
	want = storeFile(want)
	have := a.storeFile()
	if sameStoreFile(want, have) {
		return a, rt, nil
	}
	named := "the request"
	if c := q.Get("config"); c != "" {
		named = c
	}
	// 421 Misdirected Request: the request reached a Caddy that is not
	// the one for it. The CLI recognises this status and puts the address
	// it dialled in place of "this Caddy".
	return nil, nil, caddy.APIError{HTTPStatus: http.StatusMisdirectedRequest,
		Err: fmt.Errorf("this Caddy runs the Sigra store %s, but %s names %s", have, named, want)}
}

// storeFile is the app's store file (see storeFile).
func (a *App) storeFile() string { return storeFile(a.storagePath) }

// storeFile is the file a store path opens, as an absolute path: a
// relative path is taken from the working directory, as OpenBolt takes it,
// and, when the file exists, symbolic links are resolved in order, so that
// "link/../x" is where the link's parent is, as the system resolves it,
// and not where the lexical Clean would put it.
func storeFile(path string) string {
	p := path
	if !filepath.IsAbs(p) {
		if wd, err := os.Getwd(); err == nil {
			p = wd + string(filepath.Separator) + p
		}
	}
	if real, err := filepath.EvalSymlinks(p); err == nil {
		return real
	}
	if abs, err := filepath.Abs(path); err == nil {
		return abs
	}
	return filepath.Clean(path)
}

// sameStoreFile reports whether two absolute paths (from storeFile) are
// the same store file: the same path, or the same file on disk (a hard
// link, a bind mount).
func sameStoreFile(x, y string) bool {
	if x == y {
		return true
	}
	fx, err := os.Stat(x)
	if err != nil {
		return false
	}
	fy, err := os.Stat(y)
	return err == nil && os.SameFile(fx, fy)
}

// handleAdminAuditExport streams audit rows as NDJSON, oldest first
// (GET, query parameters since and until).
func handleAdminAuditExport(w http.ResponseWriter, r *http.Request) error {
	return streamToAdmin(w, r, "application/x-ndjson", "audit export", func(rt *runtime, out io.Writer) error {
		since, until, err := exportRange(r.URL.Query().Get("since"), r.URL.Query().Get("until"), rt.auth.Now())
		if err != nil {
			return caddy.APIError{HTTPStatus: http.StatusBadRequest, Err: err}
		}
		_, err = rt.audit.Export(r.Context(), out, since, until)
		return err
	})
}

// streamToAdmin answers a GET on Caddy's admin API with what write
// streams to out (w, each write with a deadline: a client that stops
// reading is let go after a minute). A failure after any byte reached w
// cuts the answer short: the 200 and
// part of the body are out, and Caddy's error object after them would
// read as more body, the answer as whole. Every HTTP client reports a
// cut (the CLI exits non-zero); the cause goes to the log.
func streamToAdmin(w http.ResponseWriter, r *http.Request, contentType, what string, write func(rt *runtime, out io.Writer) error) error {
	if r.Method != http.MethodGet {
		return caddy.APIError{HTTPStatus: http.StatusMethodNotAllowed, Err: errors.New("use GET")}
	}
	a, rt, err := runningFor(r)
	if err != nil {
		return err
	}
	w.Header().Set("Content-Type", contentType)
	out := &deadlineWriter{w: w, rc: http.NewResponseController(w), idle: time.Minute}
	err = write(rt, out)
	if n := out.sent; err != nil && n > 0 {
		if r.Context().Err() != nil { // the client stopped reading (| head, say)
			a.logger.Warn(what+" stopped part way: the client went away", zap.Int64("sent", n), zap.Error(err))
		} else {
			a.logger.Error(what+" failed part way; the response was cut short", zap.Int64("sent", n), zap.Error(err))
		}
		panic(http.ErrAbortHandler)
	}
	if err != nil {
		// Nothing sent: Caddy answers with the error, whose length is
		// not the one write may have announced.
		w.Header().Del("Content-Length")
	}
	return err
}

// deadlineWriter gives each write to a client a deadline, and counts what
// it was handed (what the writer counts itself, rows say, may be 0 while
// part of one is out).
type deadlineWriter struct {
	w    io.Writer
	rc   *http.ResponseController
	idle time.Duration
	sent int64
}

func (d *deadlineWriter) Write(p []byte) (int, error) {
	_ = d.rc.SetWriteDeadline(time.Now().Add(d.idle)) // not supported: no deadline
	n, err := d.w.Write(p)
	d.sent += int64(n)
	return n, err
}

// handleAdminAuditReplay puts dead webhook deliveries back in the outbox
// (POST, query parameter hook: one webhook's, or all without it) and
// answers {"replayed": n}.
func handleAdminAuditReplay(w http.ResponseWriter, r *http.Request) error {
	if r.Method != http.MethodPost {
		return caddy.APIError{HTTPStatus: http.StatusMethodNotAllowed, Err: errors.New("use POST")}
	}
	_, rt, err := runningFor(r)
	if err != nil {
		return err
	}
	n, err := replayDead(r.Context(), rt, r.URL.Query().Get("hook"), r.URL.Query().Get("to"), r, "")
	if errors.Is(err, audit.ErrUnknownWebhook) {
		return caddy.APIError{HTTPStatus: http.StatusNotFound, Err: err}
	}
	if err != nil {
		return err
	}
	w.Header().Set("Content-Type", "application/json")
	return json.NewEncoder(w).Encode(map[string]int{"replayed": n})
}

// handleAdminUsers runs one userRequest (POST, JSON body).
func handleAdminUsers(w http.ResponseWriter, r *http.Request) error {
	return adminOp(w, r, func(a *App, rt *runtime, req userRequest) (any, error) {
		return doUser(r.Context(), rt, a.AdminGroup, req, r, "")
	})
}

// handleAdminKeys runs one keysRequest (POST, JSON body).
func handleAdminKeys(w http.ResponseWriter, r *http.Request) error {
	return adminOp(w, r, func(_ *App, rt *runtime, req keysRequest) (any, error) {
		return doKeys(r.Context(), rt, req, r, "")
	})
}

// adminOp serves a CLI operation on the running app: a POST whose JSON
// body is the request, answered with the result as JSON, errors mapped by
// userErrorStatus. The CLI is the actor (recorded as the system).
func adminOp[Req any](w http.ResponseWriter, r *http.Request, run func(a *App, rt *runtime, req Req) (any, error)) error {
	if r.Method != http.MethodPost {
		return caddy.APIError{HTTPStatus: http.StatusMethodNotAllowed, Err: errors.New("use POST")}
	}
	a, rt, err := runningFor(r)
	if err != nil {
		return err
	}
	req, err := decodeAdminRequest[Req](w, r)
	if err != nil {
		return err
	}
	res, err := run(a, rt, req)
	if err != nil {
		return caddy.APIError{HTTPStatus: userErrorStatus(err), Err: err}
	}
	w.Header().Set("Content-Type", "application/json")
	return json.NewEncoder(w).Encode(res)
}

// decodeAdminRequest reads a request body that is one JSON object of
// Req's fields and nothing else (decodeStrictJSON). A body over
// maxFormBody is a 413.
func decodeAdminRequest[Req any](w http.ResponseWriter, r *http.Request) (Req, error) {
	var req Req
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxFormBody))
	if isTooLarge(err) {
		return req, caddy.APIError{HTTPStatus: http.StatusRequestEntityTooLarge,
			Err: fmt.Errorf("request body over %d bytes", maxFormBody)}
	}
	if err == nil {
		err = decodeStrictJSON(body, &req)
	}
	if err != nil {
		return req, caddy.APIError{HTTPStatus: http.StatusBadRequest, Err: fmt.Errorf("decoding request: %w", err)}
	}
	return req, nil
}

// decodeStrictJSON decodes data, which must be UTF-8 holding one JSON
// value and nothing after it but white space, into v, refusing unknown
// fields: a misspelt option, a client of another version, or bytes that
// are not text are refused rather than half understood. (Go's decoder
// would turn invalid UTF-8 into U+FFFD, so a name stored from such a
// body would not be the one sent.)
func decodeStrictJSON(data []byte, v any) error {
	if !utf8.Valid(data) || hasLoneSurrogate(data) {
		return errors.New("the body is not valid UTF-8")
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err == io.EOF {
		return errors.New("empty body")
	} else if te, ok := errors.AsType[*json.UnmarshalTypeError](err); ok {
		if te.Field == "" {
			return fmt.Errorf("the body must be a JSON object, not a JSON %s", te.Value)
		}
		return fmt.Errorf("%s cannot be a JSON %s", te.Field, te.Value) // without Go's type names
	} else if err != nil {
		return err
	}
	if err := checkKeys(data, jsonFieldNames(v)); err != nil {
		return err
	}
	var extra json.RawMessage
	switch err := dec.Decode(&extra); err {
	case io.EOF:
		return nil
	case nil:
		return errors.New("trailing data after the JSON value: a second JSON value")
	default:
		return fmt.Errorf("trailing data after the JSON value: %w", err)
	}
}

// checkKeys refuses what Go's decoder lets through: an object that
// names a key twice (the last would win) and, at the top level, a field
// spelt in another case than fields has it (Go matches case-blind).
// Syntax errors are left to the decoder, which has seen data first.
func checkKeys(data []byte, fields []string) error {
	type frame struct {
		keys map[string]bool // nil in an array
		key  bool            // the next token is a key
	}
	var stack []*frame
	valueDone := func() {
		if n := len(stack); n > 0 && stack[n-1].keys != nil {
			stack[n-1].key = true
		}
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	for {
		tok, err := dec.Token()
		if err != nil {
			return nil
		}
		n := len(stack)
		if n > 0 && stack[n-1].key {
			k, ok := tok.(string)
			if !ok { // the object's '}'
				stack = stack[:n-1]
				valueDone()
				continue
			}
			if stack[n-1].keys[k] {
				return fmt.Errorf("%q is given twice", k)
			}
			stack[n-1].keys[k] = true
			stack[n-1].key = false
			for _, f := range fields {
				if n == 1 && k != f && strings.EqualFold(k, f) {
					return fmt.Errorf("unknown field %q (the field is %q)", k, f)
				}
			}
			continue
		}
		switch tok {
		case json.Delim('{'):
			stack = append(stack, &frame{keys: map[string]bool{}, key: true})
		case json.Delim('['):
			stack = append(stack, &frame{})
		case json.Delim(']'):
			stack = stack[:n-1]
			valueDone()
		default:
			valueDone()
		}
	}
}

// jsonFieldNames lists the JSON names of the fields of the struct v
// points to (none for anything else).
func jsonFieldNames(v any) []string {
	t := reflect.TypeOf(v)
	if t == nil || t.Kind() != reflect.Pointer || t.Elem().Kind() != reflect.Struct {
		return nil
	}
	var names []string
	for f := range t.Elem().Fields() {
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if name == "-" || !f.IsExported() {
			continue
		}
		if name == "" {
			name = f.Name
		}
		names = append(names, name)
	}
	return names
}

// hasLoneSurrogate reports whether JSON text escapes half of a UTF-16
// surrogate pair (\ud800 alone), which Go's decoder, too, turns into
// U+FFFD rather than refuse.
func hasLoneSurrogate(data []byte) bool {
	escaped := func(i int) (rune, bool) { // the \uXXXX at data[i:], if any
		if i+6 > len(data) || data[i] != '\\' || data[i+1] != 'u' {
			return 0, false
		}
		n, err := strconv.ParseUint(string(data[i+2:i+6]), 16, 16)
		return rune(n), err == nil
	}
	for i := 0; i < len(data); i++ {
		if data[i] != '\\' {
			continue
		}
		r, ok := escaped(i)
		if !ok {
			i++ // an escaped byte, a backslash included
			continue
		}
		i += 5
		switch {
		case 0xdc00 <= r && r <= 0xdfff:
			return true
		case 0xd800 <= r && r <= 0xdbff:
			low, ok := escaped(i + 1)
			if !ok || low < 0xdc00 || low > 0xdfff {
				return true
			}
			i += 6
		}
	}
	return false
}

// userErrorStatus maps a user-operation error to an HTTP status.
func userErrorStatus(err error) int {
	switch {
	case errors.Is(err, errUsage), errors.Is(err, authcore.ErrInvalidInput):
		return http.StatusBadRequest
	case errors.Is(err, authcore.ErrNotFound):
		return http.StatusNotFound
	case errors.Is(err, errNoLongerAdmin):
		return http.StatusForbidden
	case errors.Is(err, authcore.ErrEmailTaken), errors.Is(err, authcore.ErrLastAdmin), errors.Is(err, errNoAuthenticator),
		errors.Is(err, errSelfDisable), errors.Is(err, errSelfDelete), errors.Is(err, errSelfMFAReset), errors.Is(err, errSelfSignout), errors.Is(err, errSelfUnlock):
		return http.StatusConflict
	}
	return http.StatusInternalServerError
}

// Interface guards
var _ caddy.AdminRouter = (*adminAPI)(nil)
