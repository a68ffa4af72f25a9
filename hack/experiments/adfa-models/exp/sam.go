package exp

// SAM is a suffix automaton: every substring of the corpus is a path from
// state 0, so the longest training run matching a test stream is found in
// amortised O(1) per call.
type SAM struct {
	Len  []int32
	Link []int32
	Next []map[int32]int32
	last int32
}

// BuildSAM indexes the traces, with -1 between them so no match spans two.
func BuildSAM(train [][]int32) *SAM {
	s := &SAM{}
	s.add(0, -1)
	for _, t := range train {
		for _, c := range t {
			s.extend(c)
		}
		s.extend(-1)
	}
	return s
}

func (s *SAM) add(l, link int32) int32 {
	s.Len = append(s.Len, l)
	s.Link = append(s.Link, link)
	s.Next = append(s.Next, map[int32]int32{})
	return int32(len(s.Len) - 1)
}

func (s *SAM) extend(c int32) {
	cur := s.add(s.Len[s.last]+1, 0)
	p := s.last
	for p != -1 {
		if _, ok := s.Next[p][c]; ok {
			break
		}
		s.Next[p][c] = cur
		p = s.Link[p]
	}
	if p != -1 {
		q := s.Next[p][c]
		if s.Len[p]+1 == s.Len[q] {
			s.Link[cur] = q
		} else {
			cl := s.add(s.Len[p]+1, s.Link[q])
			for k, v := range s.Next[q] {
				s.Next[cl][k] = v
			}
			for p != -1 && s.Next[p][c] == q {
				s.Next[p][c] = cl
				p = s.Link[p]
			}
			s.Link[q] = cl
			s.Link[cur] = cl
		}
	}
	s.last = cur
}

// CoverSegs is the greedy covering (Marteau 2019): the number of longest
// training runs that cover ids, per call.
func (s *SAM) CoverSegs(ids []int32) float64 {
	segs := 0
	st := int32(0)
	for _, c := range ids {
		nx, ok := s.Next[st][c]
		if !ok {
			segs++
			nx, ok = s.Next[0][c]
			if !ok {
				st = 0
				continue
			}
		}
		st = nx
	}
	segs++
	return float64(segs) / float64(len(ids))
}
