package netboot

import "errors"

// startDHCP opens the DHCP server per dhcp.mode. The DHCP package
// (netboot/dhcp) is being written; until it lands, Start refuses modes
// other than off instead of pretending to serve.
func (s *Server) startDHCP() error {
	return errors.New("netboot: the DHCP server is not built into this version yet; set dhcp.mode: off and point the site's DHCP server at us")
}
