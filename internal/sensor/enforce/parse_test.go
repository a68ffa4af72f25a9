package enforce

import (
	"bytes"
	"encoding/binary"
	"errors"
	"testing"

	"golang.org/x/sys/unix"
)

func rtattr(typ uint16, payload []byte) []byte {
	b := make([]byte, nlmAlign(unix.SizeofRtAttr+len(payload)))
	binary.NativeEndian.PutUint16(b, uint16(unix.SizeofRtAttr+len(payload)))
	binary.NativeEndian.PutUint16(b[2:], typ)
	copy(b[unix.SizeofRtAttr:], payload)
	return b
}

func TestCgroupAttr(t *testing.T) {
	id := binary.NativeEndian.AppendUint64(nil, 4242)
	for _, tc := range []struct {
		name string
		in   []byte
		want uint64
		ok   bool
	}{
		{"after other attributes", append(rtattr(1, []byte{1, 2, 3}), rtattr(inetDiagCgroupID, id)...), 4242, true},
		{"absent", rtattr(1, []byte{1, 2, 3, 4}), 0, false},
		{"truncated", rtattr(inetDiagCgroupID, id)[:8], 0, false},
		{"bad length", []byte{2, 0, 21, 0}, 0, false},
	} {
		got, ok := cgroupAttr(tc.in)
		if got != tc.want || ok != tc.ok {
			t.Errorf("%s: got %d, %v; want %d, %v", tc.name, got, ok, tc.want, tc.ok)
		}
	}
}

func TestReadDestroyed(t *testing.T) {
	var b []byte
	for _, ret := range []int32{0, 0, -int32(unix.EOPNOTSUPP), 0} {
		b = binary.NativeEndian.AppendUint32(b, uint32(ret))
	}
	n, err := readDestroyed(bytes.NewReader(b))
	if n != 3 || !errors.Is(err, unix.EOPNOTSUPP) {
		t.Fatalf("got %d, %v; want 3 destroyed and EOPNOTSUPP", n, err)
	}
	if n, err := readDestroyed(bytes.NewReader(nil)); n != 0 || err != nil {
		t.Fatalf("empty output: got %d, %v", n, err)
	}
}
