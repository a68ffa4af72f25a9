package evidence

import (
	"encoding/json"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
)

// TestRedactArgsTable covers the forms issue 14 found unredacted: shell
// scripts, tools' attached passwords and URL/DSN passwords.
func TestRedactArgsTable(t *testing.T) {
	for _, tc := range []struct{ name, in, want string }{
		{"flag=value", "--password=hunter2", "--password=REDACTED"},
		{"dsn", "postgres://app:pw1@db:5432/shop", "postgres://app:REDACTED@db:5432/shop"},
		{"dsn in flag", "--database-url=mysql://root:pw2@tcp(db)/x", "--database-url=mysql://root:REDACTED@tcp(db)/x"},
		{"dsn env style", "DATABASE_URL=redis://:pw3@cache:6379", "DATABASE_URL=redis://:REDACTED@cache:6379"},
		{"url without password", "http://example.com/a", "http://example.com/a"},
		{"sh -c mysql -p", "mysql -u root -pSup3r shop", "mysql -u root -pREDACTED shop"},
		{"script with flag pair", "run --token abc && echo ok", "run --token REDACTED && echo ok"},
		{"script with dsn", "psql postgres://u:pw4@h/db -c 'select 1'", "psql postgres://u:REDACTED@h/db -c 'select 1'"},
		{"script assignment", "export API_KEY=k5; ./serve", "export API_KEY=REDACTED ./serve"},
		{"multi-line script", "set -e\nmysqldump -pX6 db > /dump", "set -e\nmysqldump -pREDACTED db > /dump"},
		{"attached password that reads like a flag", "mysql -pMyToken db", "mysql -pREDACTED db"},
		{"-p elsewhere is a port", "nc -p1234 host", "nc -p1234 host"},
		{"tool resets after &&", "mysql -pA && ping -p5 h", "mysql -pREDACTED && ping -p5 h"},
		{"redis-cli -a", "redis-cli -a pw7 ping", "redis-cli -a REDACTED ping"},
		{"mysql -p prompts", "mysql -p shop", "mysql -p shop"},
		{"sshpass -p", "sshpass -p pw9 ssh h", "sshpass -p REDACTED ssh h"},
		{"redis-cli -aX", "redis-cli -apw8 ping", "redis-cli -aREDACTED ping"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := RedactArgs([]string{tc.in})[0]; got != tc.want {
				t.Fatalf("got  %q\nwant %q", got, tc.want)
			}
		})
	}
	// As separate arguments: sh -c "mysql -pX", mysql -p X-attached.
	got := strings.Join(RedactArgs([]string{"/bin/mysql", "-uroot", "-phunter2", "shop"}), " ")
	if got != "/bin/mysql -uroot -pREDACTED shop" {
		t.Fatal(got)
	}
	got = strings.Join(RedactArgs([]string{"sh", "-c", `mysql -h db -p"s3cr et" shop`}), " ")
	if strings.Contains(got, "s3cr") {
		t.Fatal(got)
	}
}

func TestRedactText(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"connecting to postgres://u:pw@h/db", "connecting to postgres://u:REDACTED@h/db"},
		{`login password=hunter2 user=bob`, `login password=REDACTED user=bob`},
		{`{"api_key": "abc"}`, `{"api_key": REDACTED}`},
		{"Authorization: Bearer eyJhbGciOi.x.y", "Authorization: Bearer REDACTED"},
		{"nothing here", "nothing here"},
	} {
		if got := RedactText(tc.in); got != tc.want {
			t.Errorf("RedactText(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

// TestRedactPodSpecProbesAndLifecycle: probe HTTP headers and exec
// commands, and lifecycle hooks, were copied into evidence unredacted.
func TestRedactPodSpecProbesAndLifecycle(t *testing.T) {
	probe := func() *corev1.Probe {
		return &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/healthz",
			HTTPHeaders: []corev1.HTTPHeader{{Name: "Authorization", Value: "Bearer tok-probe"}, {Name: "X-Custom", Value: "k-probe"}}}}}
	}
	in := &corev1.PodSpec{Containers: []corev1.Container{{
		Name: "c", LivenessProbe: probe(), ReadinessProbe: probe(),
		StartupProbe: &corev1.Probe{ProbeHandler: corev1.ProbeHandler{Exec: &corev1.ExecAction{Command: []string{"sh", "-c", "mysqladmin -pprobe-pw ping"}}}},
		Lifecycle: &corev1.Lifecycle{
			PostStart: &corev1.LifecycleHandler{Exec: &corev1.ExecAction{Command: []string{"sh", "-c", "curl -H 'x' https://u:hook-pw@h/register"}}},
			PreStop:   &corev1.LifecycleHandler{Exec: &corev1.ExecAction{Command: []string{"/drain", "--token", "hook-tok"}}},
		},
	}}, EphemeralContainers: []corev1.EphemeralContainer{{EphemeralContainerCommon: corev1.EphemeralContainerCommon{
		Name: "debug", Lifecycle: &corev1.Lifecycle{PreStop: &corev1.LifecycleHandler{Exec: &corev1.ExecAction{Command: []string{"x", "--password=eph-pw"}}}},
	}}}}
	out, err := json.Marshal(RedactPodSpec(in))
	if err != nil {
		t.Fatal(err)
	}
	for _, secret := range []string{"tok-probe", "k-probe", "probe-pw", "hook-pw", "hook-tok", "eph-pw"} {
		if strings.Contains(string(out), secret) {
			t.Errorf("%s left in %s", secret, out)
		}
	}
	if !strings.Contains(string(out), `"name":"Authorization"`) || !strings.Contains(string(out), "/healthz") {
		t.Errorf("header names and paths are kept: %s", out)
	}
	if in.Containers[0].LivenessProbe.HTTPGet.HTTPHeaders[0].Value != "Bearer tok-probe" {
		t.Fatal("input modified")
	}
}

func TestRedactJSON(t *testing.T) {
	got := string(redactJSON(json.RawMessage(`{"proc.cmdline":"mysql -pX1 db","password":"X2","n":3,"list":["postgres://a:X3@h"]}`)))
	for _, s := range []string{"X1", "X2", "X3"} {
		if strings.Contains(got, s) {
			t.Fatalf("%s left in %s", s, got)
		}
	}
	if !strings.Contains(got, `"n":3`) {
		t.Fatal(got)
	}
	if got := string(redactJSON(json.RawMessage(`not json password=x`))); strings.Contains(got, "=x") {
		t.Fatal(got)
	}
}
