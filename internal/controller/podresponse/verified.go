package podresponse

import (
	"sync"

	"k8s.io/apimachinery/pkg/types"

	securityv1alpha1 "github.com/bulkhead-dev/bulkhead/api/v1alpha1"
	"github.com/bulkhead-dev/bulkhead/internal/provenance"
)

// verified remembers the provenance check of each Quarantine version. A
// decision reads every Quarantine of the cluster under decideMu; checking
// each one's signature again (an HMAC: 1.6 µs and 22 allocations) made each
// decision of a burst cost O(Quarantines) under the lock. One version (uid
// and resourceVersion) of an object never changes, nor does its verdict;
// any write to it, a forged annotation included, is a new version.
type verified struct {
	mu     sync.Mutex
	signer *provenance.Signer
	byUID  map[types.UID]verdict
}

type verdict struct {
	resourceVersion string
	made            bool
}

// made reports signer.Made(q), checking each version of q once.
func (v *verified) made(signer *provenance.Signer, q *securityv1alpha1.Quarantine) bool {
	if q.UID == "" || q.ResourceVersion == "" {
		return signer.Made(q)
	}
	v.mu.Lock()
	if v.signer != signer {
		v.signer, v.byUID = signer, map[types.UID]verdict{}
	}
	e, ok := v.byUID[q.UID]
	v.mu.Unlock()
	if ok && e.resourceVersion == q.ResourceVersion {
		return e.made
	}
	made := signer.Made(q)
	v.mu.Lock()
	if v.signer == signer {
		v.byUID[q.UID] = verdict{resourceVersion: q.ResourceVersion, made: made}
	}
	v.mu.Unlock()
	return made
}

// keepOnly forgets the Quarantines not in listed (all there are) once the
// verdicts outnumber them by far.
func (v *verified) keepOnly(listed []*securityv1alpha1.Quarantine) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if len(v.byUID) <= 2*len(listed)+64 {
		return
	}
	keep := make(map[types.UID]verdict, len(listed))
	for i := range listed {
		if e, ok := v.byUID[listed[i].UID]; ok {
			keep[listed[i].UID] = e
		}
	}
	v.byUID = keep
}
