package web

import (
	"testing"

	"github.com/meshchat/meshchat/web/webtest"
)

// TestLoginsCounted: a login is counted as ok, and an outcome reported
// through CountLogin (as other ways of logging in do) under its code.
func TestLoginsCounted(t *testing.T) {
	e := newEnv(t, envOpts{})
	if got := e.srv.Stats().Logins; len(got) != 0 {
		t.Fatalf("logins before any: %v", got)
	}
	webtest.Login(t, e.ts.URL, "alice")
	webtest.Login(t, e.ts.URL, "bob")
	e.srv.CountLogin("bad_credentials")
	got := e.srv.Stats().Logins
	if got[LoginOK] != 2 || got["bad_credentials"] != 1 || len(got) != 2 {
		t.Errorf("logins = %v, want 2 ok and 1 bad_credentials", got)
	}
}
