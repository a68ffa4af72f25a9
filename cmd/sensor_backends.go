package main

import (
	"errors"

	"github.com/bulkhead-dev/bulkhead/internal/detector"
	"github.com/bulkhead-dev/bulkhead/internal/sensor"
)

// sensorBackends connects the sensor to the kernel: the eBPF collector
// (internal/sensor/collect), the cgroup reader (internal/sensor/cgroups) and
// the enforcer (internal/sensor/enforce), through adapters to the
// interfaces of internal/sensor. Until those packages are merged into this
// build, every backend reports itself missing, which the sensor shows as
// not ready (/readyz, coverage.ready=false, bulkhead_sensor_bpf_available 0).
func sensorBackends(cgroupRoot, pinDir string) (sensor.Backends, func()) {
	_, _ = cgroupRoot, pinDir
	missing := errors.New("not linked into this build")
	return sensor.Backends{
		NewCollector: func() (sensor.Collector, error) {
			return nil, &sensor.UnavailableError{Missing: "kernel collector (internal/sensor/collect)", Err: missing}
		},
		Containers:  noContainers{},
		EnforcerErr: errors.New("kernel enforcer (internal/sensor/enforce) not linked into this build"),
	}, func() {}
}

// noContainers finds no containers: without the cgroup reader there is
// nothing to map.
type noContainers struct{}

func (noContainers) Scan(string) ([]sensor.Container, error) { return nil, nil }
func (noContainers) PodCgroup(string, string) (string, uint64, error) {
	return "", 0, errors.New("cgroup reader (internal/sensor/cgroups) not linked into this build")
}
func (noContainers) ReadUsage(string, string) (sensor.Usage, error) {
	return nil, errors.New("cgroup reader not linked into this build")
}
func (noContainers) Rate(sensor.Usage, sensor.Usage) detector.ResourceSample {
	return detector.ResourceSample{}
}
