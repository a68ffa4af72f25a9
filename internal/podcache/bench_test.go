package podcache

import (
	"encoding/json"
	"fmt"
	"runtime"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	toolscache "k8s.io/client-go/tools/cache"
	"k8s.io/utils/ptr"
)

// benchPod is shaped like the pods of make bench as the API server returns
// them: one of ten replicas of a ReplicaSet, defaults, the service-account
// volume, a Running status from kwok.
func benchPod(i int) []byte {
	p := realistic()
	rs := fmt.Sprintf("w-%d", i/10)
	p.Name, p.UID, p.ResourceVersion = fmt.Sprintf("%s-%d", rs, i%10), types.UID(fmt.Sprintf("00000000-0000-0000-0000-%012d", i)), fmt.Sprint(1000+i)
	p.Labels = map[string]string{"app": "svc", "workload": rs}
	p.OwnerReferences[0].Name, p.OwnerReferences[0].UID = rs, types.UID("rs-"+rs)
	p.Spec.NodeName = fmt.Sprintf("kwok-node-%d", i%42)
	p.Spec.Tolerations = append(p.Spec.Tolerations, corev1.Toleration{Key: "node.kubernetes.io/unreachable", Operator: corev1.TolerationOpExists, TolerationSeconds: ptr.To[int64](300)})
	p.Spec.Volumes[0].Projected.Sources = append(p.Spec.Volumes[0].Projected.Sources,
		corev1.VolumeProjection{ConfigMap: &corev1.ConfigMapProjection{LocalObjectReference: corev1.LocalObjectReference{Name: "kube-root-ca.crt"}, Items: []corev1.KeyToPath{{Key: "ca.crt", Path: "ca.crt"}}}},
		corev1.VolumeProjection{DownwardAPI: &corev1.DownwardAPIProjection{Items: []corev1.DownwardAPIVolumeFile{{Path: "namespace", FieldRef: &corev1.ObjectFieldSelector{APIVersion: "v1", FieldPath: "metadata.namespace"}}}}})
	for _, c := range []corev1.PodConditionType{corev1.PodInitialized, corev1.ContainersReady, corev1.PodScheduled} {
		p.Status.Conditions = append(p.Status.Conditions, corev1.PodCondition{Type: c, Status: corev1.ConditionTrue, LastTransitionTime: metav1.Now()})
	}
	p.Status.HostIP, p.Status.PodIPs = "10.1.0.1", []corev1.PodIP{{IP: "10.0.0.1"}}
	data, _ := json.Marshal(p)
	return data
}

// BenchmarkCachedPodBytes reports the heap a cache of n pods holds per pod,
// without and with the transform (make bench measures the whole manager).
func BenchmarkCachedPodBytes(b *testing.B) {
	const n = 2000
	raw := make([][]byte, n)
	for i := range raw {
		raw[i] = benchPod(i)
	}
	for _, tc := range []struct {
		name string
		tf   toolscache.TransformFunc
	}{{"managedFieldsStripped", nil}, {"trimmed", Transform()}} {
		b.Run(tc.name, func(b *testing.B) {
			for b.Loop() {
				before := heap()
				store := toolscache.NewIndexer(toolscache.MetaNamespaceKeyFunc, toolscache.Indexers{toolscache.NamespaceIndex: toolscache.MetaNamespaceIndexFunc})
				for _, data := range raw {
					var obj any = &corev1.Pod{}
					if err := json.Unmarshal(data, obj); err != nil {
						b.Fatal(err)
					}
					obj.(*corev1.Pod).ManagedFields = nil
					if tc.tf != nil {
						obj, _ = tc.tf(obj)
					}
					if err := store.Add(obj); err != nil {
						b.Fatal(err)
					}
				}
				b.ReportMetric(float64(heap()-before)/n, "B/pod")
				runtime.KeepAlive(store)
			}
		})
	}
}

func heap() int64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return int64(m.HeapAlloc)
}
