package main

// Suffix automaton, copied from ../cover (package main there, so not importable).

type sam struct {
	len  []int32
	link []int32
	next []map[int32]int32
	last int32
}

func newSAM() *sam {
	s := &sam{}
	s.add(0, -1)
	return s
}

func (s *sam) add(l, link int32) int32 {
	s.len = append(s.len, l)
	s.link = append(s.link, link)
	s.next = append(s.next, map[int32]int32{})
	return int32(len(s.len) - 1)
}

func (s *sam) extend(c int32) {
	cur := s.add(s.len[s.last]+1, 0)
	p := s.last
	for p != -1 {
		if _, ok := s.next[p][c]; ok {
			break
		}
		s.next[p][c] = cur
		p = s.link[p]
	}
	if p != -1 {
		q := s.next[p][c]
		if s.len[p]+1 == s.len[q] {
			s.link[cur] = q
		} else {
			cl := s.add(s.len[p]+1, s.link[q])
			for k, v := range s.next[q] {
				s.next[cl][k] = v
			}
			for p != -1 && s.next[p][c] == q {
				s.next[p][c] = cl
				p = s.link[p]
			}
			s.link[q] = cl
			s.link[cur] = cl
		}
	}
	s.last = cur
}

// coverSegs is the greedy covering segment count per call (cover's segs/n).
func (s *sam) coverSegs(ids []int32) float64 {
	segs := 0
	st := int32(0)
	for _, c := range ids {
		nx, ok := s.next[st][c]
		if !ok {
			segs++
			st = 0
			nx, ok = s.next[0][c]
			if !ok {
				continue
			}
		}
		st = nx
	}
	segs++
	return float64(segs) / float64(len(ids))
}

func buildSAM(train [][]int32) *sam {
	a := newSAM()
	for _, t := range train {
		for _, c := range t {
			a.extend(c)
		}
		a.extend(-1)
	}
	return a
}
