# Systemd units live in /usr/lib/systemd/system: noble and trixie are
# usr-merged, and trixie's lintian reports anything under /lib as
# aliased-location. debhelper 13.11 (bookworm) at compat 13 installs, enables
# and starts only units under lib/systemd/system (13.14 on noble, and trixie's,
# look in both), and the maintainer-script snippets it writes name units, not
# paths; so units are staged in lib/systemd/system (debian/*.install) and
# moved to usr/lib/systemd/system once dh_installsystemd has run.
# Included by debian/rules; the builder appends it to polymarket-bot's rules.
execute_after_dh_installsystemd:
	set -e; for pkg in $$(dh_listpackages); do \
	  lib=debian/$$pkg/lib/systemd/system; usr=debian/$$pkg/usr/lib/systemd/system; \
	  [ -d "$$lib" ] || continue; \
	  mkdir -p "$$usr"; cp -a "$$lib/." "$$usr/"; rm -r "$$lib"; \
	  rmdir --ignore-fail-on-non-empty debian/$$pkg/lib/systemd debian/$$pkg/lib; \
	done
