package localcluster

import (
	"os"
	"path/filepath"
	"reflect"
	"testing"
)

func TestForbiddenFindsDistinctAuthorizationFailures(t *testing.T) {
	log := `I1124 starting
E1124 reflector.go:227] "Failed to watch" err="failed to list *v1.Secret: secrets \"n\" is forbidden: User \"system:serviceaccount:bulkhead-system:m\" cannot list resource \"secrets\" in API group \"\" in the namespace \"bulkhead-system\"" logger="x"
{"level":"error","error":"failed to list *v1.Namespace: namespaces is forbidden: User \"system:serviceaccount:bulkhead-system:m\" cannot list resource \"namespaces\" in API group \"\" at the cluster scope"}
E1124 reflector.go:227] "Failed to watch" err="failed to list *v1.Secret: secrets \"n\" is forbidden: User \"system:serviceaccount:bulkhead-system:m\" cannot list resource \"secrets\" in API group \"\" in the namespace \"bulkhead-system\"" logger="x"
{"level":"error","error":"deployments.apps \"shop\" is forbidden: User \"u\" cannot patch resource \"deployments/scale\" in API group \"apps\" in the namespace \"web\""}
`
	path := filepath.Join(t.TempDir(), "manager.log")
	if err := os.WriteFile(path, []byte(log), 0o600); err != nil {
		t.Fatal(err)
	}
	p := &Process{LogPath: path}
	want := []string{
		`cannot list resource "secrets" in API group "" in the namespace "bulkhead-system"`,
		`cannot list resource "namespaces" in API group "" at the cluster scope`,
		`cannot patch resource "deployments/scale" in API group "apps" in the namespace "web"`,
	}
	if got := p.Forbidden(0); !reflect.DeepEqual(got, want) {
		t.Fatalf("Forbidden(0) = %q, want %q", got, want)
	}
	if got := p.Forbidden(int64(len(log))); len(got) != 0 {
		t.Fatalf("Forbidden(end) = %q, want none", got)
	}
}
