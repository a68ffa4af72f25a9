//go:build e2e

package e2e

import "testing"

// The manager runs under its ServiceAccount with config/rbac: any API request
// it was refused during the scenarios (including background watches, which no
// single scenario owns) is a permission the shipped RBAC lacks. This file
// sorts last, so the test sees the whole run.
func TestManagerNeverRefusedByRBAC(t *testing.T) {
	refused := env.manager.Forbidden(0)
	for _, f := range refused {
		t.Errorf("config/rbac: the manager %s", f)
	}
	if len(refused) > 0 {
		t.Logf("manager log: %s", env.manager.LogPath)
	}
}
