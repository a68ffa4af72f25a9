package enforce

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
)

const (
	metaPin     = "meta"
	allowPin    = "allow"
	countersPin = "counters"
	// tmpPrefix marks a pin being written; bpffs forbids dots in names.
	tmpPrefix = "tmp_"
	// metaSize bounds the JSON intent (path and options) kept in the meta map.
	metaSize = 4096
)

// pinName turns a section name into a file name: "cgroup_skb/egress" →
// "cgroup_skb_egress".
func pinName(section string) string { return strings.ReplaceAll(section, "/", "_") }

// intent is what Isolate was asked to do, recorded before it attaches.
type intent struct {
	Path    string  `json:"path"`
	Options Options `json:"options"`
	// Done is set once every program is attached and sockets were cut.
	Done bool `json:"done"`
}

func (e *Enforcer) dir(cgid uint64) string {
	return filepath.Join(e.pinDir, strconv.FormatUint(cgid, 10))
}

// cgroupID opens a cgroup v2 directory and returns its id (the inode number
// of its directory, which is what the kernel reports as the cgroup id).
func cgroupID(path string) (uint64, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(path, &st); err != nil {
		return 0, fmt.Errorf("cgroup %s: %w", path, err)
	}
	if st.Type != unix.CGROUP2_SUPER_MAGIC {
		return 0, fmt.Errorf("cgroup %s is not on cgroup v2 (on a hybrid host use the directory under /sys/fs/cgroup/unified)", path)
	}
	var s unix.Stat_t
	if err := unix.Stat(path, &s); err != nil {
		return 0, fmt.Errorf("cgroup %s: %w", path, err)
	}
	if s.Mode&unix.S_IFMT != unix.S_IFDIR {
		return 0, fmt.Errorf("cgroup %s is not a directory", path)
	}
	return s.Ino, nil
}

var metaSpec = ebpf.MapSpec{
	Name:       "bulkhead_meta",
	Type:       ebpf.Array,
	KeySize:    4,
	ValueSize:  metaSize,
	MaxEntries: 1,
}

// readIntent loads the intent pinned in dir; os.ErrNotExist when none.
func readIntent(dir string) (intent, error) {
	var in intent
	m, err := ebpf.LoadPinnedMap(filepath.Join(dir, metaPin), &ebpf.LoadPinOptions{ReadOnly: true})
	if err != nil {
		return in, err
	}
	defer m.Close()
	buf := make([]byte, metaSize)
	if err := m.Lookup(uint32(0), &buf); err != nil {
		return in, fmt.Errorf("read intent: %w", err)
	}
	n := binary.LittleEndian.Uint32(buf)
	if n == 0 || int(n) > metaSize-4 {
		return in, fmt.Errorf("intent in %s is empty or corrupt", dir)
	}
	if err := json.Unmarshal(buf[4:4+n], &in); err != nil {
		return in, fmt.Errorf("intent in %s: %w", dir, err)
	}
	return in, nil
}

// writeIntent replaces the intent pinned in dir in one step: the new map is
// pinned under a temporary name and renamed over the old one.
func writeIntent(dir string, in intent) error {
	b, err := json.Marshal(in)
	if err != nil {
		return err
	}
	if len(b) > metaSize-4 {
		return fmt.Errorf("intent for %s is %d bytes, over the %d byte limit", in.Path, len(b), metaSize-4)
	}
	buf := make([]byte, metaSize)
	binary.LittleEndian.PutUint32(buf, uint32(len(b)))
	copy(buf[4:], b)
	m, err := ebpf.NewMap(&metaSpec)
	if err != nil {
		return fmt.Errorf("create intent map: %w", err)
	}
	defer m.Close()
	if err := m.Put(uint32(0), buf); err != nil {
		return fmt.Errorf("write intent: %w", err)
	}
	// Freezing keeps the recorded intent from being changed in place.
	if err := m.Freeze(); err != nil && !errors.Is(err, ebpf.ErrNotSupported) {
		return fmt.Errorf("freeze intent: %w", err)
	}
	tmp := filepath.Join(dir, tmpPrefix+metaPin)
	_ = os.Remove(tmp)
	if err := m.Pin(tmp); err != nil {
		return fmt.Errorf("pin intent %s: %w", tmp, err)
	}
	if err := os.Rename(tmp, filepath.Join(dir, metaPin)); err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("rename intent: %w", err)
	}
	return nil
}

// loadOrCreateMap opens the map pinned at dir/name or creates and pins it.
func loadOrCreateMap(dir, name string, spec *ebpf.MapSpec) (*ebpf.Map, error) {
	p := filepath.Join(dir, name)
	m, err := ebpf.LoadPinnedMap(p, nil)
	if err == nil {
		if err := spec.Compatible(m); err != nil {
			m.Close()
			return nil, fmt.Errorf("pinned map %s: %w", p, err)
		}
		return m, nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("open pinned map %s: %w", p, err)
	}
	s := spec.Copy()
	s.Pinning = ebpf.PinNone
	m, err = ebpf.NewMap(s)
	if err != nil {
		return nil, fmt.Errorf("create map %s: %w", name, err)
	}
	if err := m.Pin(p); err != nil {
		m.Close()
		return nil, fmt.Errorf("pin map %s: %w", p, err)
	}
	return m, nil
}

// endpointKey turns an allowed DNS endpoint into the allow map's key: the
// IPv6 form of the address (IPv4 as ::ffff:a.b.c.d) and the port in network
// byte order, as the programs see them.
func endpointKey(ap netip.AddrPort) enforceEndpoint {
	var k enforceEndpoint
	k.Addr = ap.Addr().As16()
	var port [2]byte
	binary.BigEndian.PutUint16(port[:], ap.Port())
	k.Port = binary.NativeEndian.Uint16(port[:])
	return k
}
