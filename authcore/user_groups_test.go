package authcore

import (
	"errors"
	"testing"
)

// Regression: NormalizeGroups promises group names "can travel in a
// comma-separated header" but only refuses ',', '\r' and '\n'. Other
// control characters (NUL, DEL, ESC, …) pass, are stored, and end up in
// X-Sigra-Groups / Remote-Groups, which Go's HTTP transport refuses to
// send ("invalid header field value"): every gated request of such a user
// then fails upstream instead of being refused at input time. CleanName
// already refuses them. Fix (authcore/user.go, NormalizeGroups): reject
// any rune < 0x20 or == 0x7f, as CleanName does, e.g.
//
//	if strings.ContainsFunc(g, func(r rune) bool { return r < 0x20 || r == 0x7f }) || …
func TestNormalizeGroupsRefusesControlCharacters(t *testing.T) {
	for _, g := range []string{"dev\x00", "a\x7fb", "a\x1bb", "dev\u009b2J", "adm\u200bins", "a\u202eb", "a\u2028b", "\ufeffadmins"} {
		got, err := NormalizeGroups([]string{g})
		if !errors.Is(err, ErrInvalidInput) {
			t.Errorf("NormalizeGroups(%q) = %q, %v; want ErrInvalidInput", g, got, err)
		}
	}
}
