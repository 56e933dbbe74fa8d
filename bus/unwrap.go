package bus

// Unwrap returns the bus that b decorates, following every decorator that
// has an Unwrap() Bus method (instrumentation, for one), or b itself. Code
// that adapts to a concrete bus (the relay runs one lane on the in-process
// bus) looks through decorators with it.
func Unwrap(b Bus) Bus {
	for {
		u, ok := b.(interface{ Unwrap() Bus })
		if !ok {
			return b
		}
		b = u.Unwrap()
	}
}
