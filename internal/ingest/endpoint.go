package ingest

import (
	"context"
	"fmt"
	"net"
	"strconv"
	"time"

	discoveryv1 "k8s.io/api/discovery/v1"
	discoveryac "k8s.io/client-go/applyconfigurations/discovery/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	logf "sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/bulkhead-dev/bulkhead/internal/kubeutil"
)

// The ingest Service has no selector: only the leader listens, so only the
// leader may be its endpoint. The leader publishes itself once it listens.
// +kubebuilder:rbac:groups=discovery.k8s.io,namespace=bulkhead-system,resources=endpointslices,verbs=get;create;patch

// EndpointManagedBy is the endpointslice.kubernetes.io/managed-by value of
// the slice the leader publishes; Kubernetes' own controllers leave slices
// with another value alone.
const EndpointManagedBy = "ingest.bulkhead.dev"

// PortName is the ingest Service's port name, which the slice's port must
// carry for the Service to route to it.
const PortName = "https"

// Advertiser makes the leader the one endpoint of the ingest Service: one
// EndpointSlice named after the Service, server-side applied with the
// leader's address, so a new leader replaces the old one's in one write.
type Advertiser struct {
	Client    client.Writer
	Namespace string
	Service   string
	// Address is this replica's IP (the pod IP).
	Address string
}

// Slice is the EndpointSlice naming address:port as the Service's one
// ready endpoint.
func (a *Advertiser) Slice(port int32) (*discoveryac.EndpointSliceApplyConfiguration, error) {
	ip := net.ParseIP(a.Address)
	if ip == nil {
		return nil, fmt.Errorf("ingest advertise address %q is not an IP address", a.Address)
	}
	family := discoveryv1.AddressTypeIPv4
	if ip.To4() == nil {
		family = discoveryv1.AddressTypeIPv6
	}
	return discoveryac.EndpointSlice(a.Service, a.Namespace).
		WithLabels(map[string]string{
			discoveryv1.LabelServiceName: a.Service,
			discoveryv1.LabelManagedBy:   EndpointManagedBy,
		}).
		WithAddressType(family).
		WithEndpoints(discoveryac.Endpoint().WithAddresses(ip.String()).
			WithConditions(discoveryac.EndpointConditions().WithReady(true).WithServing(true).WithTerminating(false))).
		WithPorts(discoveryac.EndpointPort().WithName(PortName).WithPort(port)), nil
}

// Publish applies the slice for the port ln listens on.
func (a *Advertiser) Publish(ctx context.Context, addr net.Addr) error {
	_, p, err := net.SplitHostPort(addr.String())
	if err != nil {
		return err
	}
	port, err := strconv.ParseInt(p, 10, 32)
	if err != nil {
		return err
	}
	slice, err := a.Slice(int32(port))
	if err != nil {
		return err
	}
	return a.Client.Apply(ctx, slice, kubeutil.FieldOwner, client.ForceOwnership)
}

// advertise publishes addr with a until it succeeds or ctx ends: until
// then the old leader's slice keeps routing to a dead address.
func advertise(ctx context.Context, a *Advertiser, addr net.Addr) {
	delay := 200 * time.Millisecond
	for {
		err := a.Publish(ctx, addr)
		if err == nil {
			logf.FromContext(ctx).Info("ingest endpoint published", "service", a.Service, "address", a.Address, "port", addr)
			return
		}
		logf.FromContext(ctx).Error(err, "publishing the ingest endpoint; retrying", "service", a.Service)
		select {
		case <-ctx.Done():
			return
		case <-time.After(delay):
		}
		delay = min(2*delay, 5*time.Second)
	}
}
