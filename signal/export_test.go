package signal

// Kill stops the server as a crash would: NATS first (nothing more is
// written, no goodbye), then every connection cut.
func (s *Server) Kill() { s.kill() }
