package ingest

import (
	"context"
	"errors"
	"net/http"
	"strings"

	"k8s.io/apimachinery/pkg/util/validation"
	logf "sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/bulkhead-dev/bulkhead/internal/detection"
	"github.com/bulkhead-dev/bulkhead/internal/metrics"
)

// ExplainPath serves a pod's live scores: GET ExplainPath + "{namespace}/{pod}".
const ExplainPath = "/v1/explain/"

// Explain serves the leader's live view of a pod's scores to Kubernetes
// users who may get quarantines in the pod's namespace. It reads only.
type Explain struct {
	Viewers interface {
		Authorize(ctx context.Context, token, namespace string) (user string, err error)
	}
	Source interface {
		Explain(ctx context.Context, key detection.PodKey) (*detection.Explanation, error)
	}
}

// serveExplain answers GET /v1/explain/{namespace}/{pod} with a
// detection.Explanation, or an Error: 401 no or bad token, 403 not allowed
// to get quarantines in the namespace, 404 no such pod (only after 403, so
// a pod's existence is not told to whom may not see it).
func (h *Handler) serveExplain(w http.ResponseWriter, r *http.Request) {
	x, err := h.explain(r)
	if err != nil {
		metrics.ExplainRequests.WithLabelValues(err.Reason).Inc()
		if err.Status >= 500 {
			logf.FromContext(r.Context()).Error(err, "explain failed")
		}
		writeJSON(w, err.Status, err)
		return
	}
	metrics.ExplainRequests.WithLabelValues("served").Inc()
	writeJSON(w, http.StatusOK, x)
}

func (h *Handler) explain(r *http.Request) (*detection.Explanation, *Error) {
	if r.Method != http.MethodGet {
		return nil, errorf(ReasonMethod, "use GET")
	}
	key := detection.PodKey{Namespace: r.PathValue("namespace"), Pod: r.PathValue("pod")}
	token, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok || token == "" {
		return nil, errorf(ReasonUnauthorized, "no bearer token: present your Kubernetes token (kubectl bulkhead explain sends the kubeconfig's)")
	}
	if len(validation.IsDNS1123Label(key.Namespace)) > 0 || len(validation.IsDNS1123Subdomain(key.Pod)) > 0 {
		return nil, errorf(ReasonMalformed, "want /v1/explain/<namespace>/<pod>")
	}
	user, err := h.cfg.Explain.Viewers.Authorize(r.Context(), token, key.Namespace)
	switch {
	case errors.Is(err, ErrUnauthenticated):
		return nil, errorf(ReasonUnauthorized, "the API server did not accept the token")
	case errors.Is(err, ErrNotAllowed):
		return nil, errorf(ReasonForbidden, "user %q may not get quarantines in namespace %q", user, key.Namespace)
	case err != nil:
		return nil, errorf(ReasonUnavailable, "%v", err)
	}
	if !h.limiter("viewer/" + user).Allow() {
		return nil, errorf(ReasonRateLimited, "user %q is over %v requests/s", user, h.cfg.Rate)
	}
	x, err := h.cfg.Explain.Source.Explain(r.Context(), key)
	switch {
	case errors.Is(err, detection.ErrNoPod):
		return nil, &Error{Status: http.StatusNotFound, Reason: ReasonUnknownPod, Message: "pod " + key.Namespace + "/" + key.Pod + " not found"}
	case err != nil:
		return nil, errorf(ReasonUnavailable, "%v", err)
	}
	return x, nil
}
