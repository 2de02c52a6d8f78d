using System.Globalization;
using System.Text;
using QubesFirewall.Engine.Model;

namespace QubesFirewall.Engine.Scripts;

/// <summary>
/// What a client qube runs for its permanent qubes.ConnectTCP bindings: per local port, a systemd socket unit
/// (<c>ListenStream=127.0.0.1:PORT</c>, <c>Accept=true</c>) and a templated service that runs
/// <c>/usr/bin/qrexec-client-vm @default qubes.ConnectTCP+PORT</c> with the connection as its standard input
/// and output, one instance per connection; and the shell script that installs them (kept in the client's
/// rc.local managed block, and run on its own when a binding changes).
/// <para>The script makes the client carry exactly its declared bindings, from scratch each time: with systemd
/// (every Qubes template), it writes the units to <c>/run/systemd/system</c> (runtime units: /run is empty at
/// each boot and a template-based qube's /etc is reset anyway; rc.local writes them again), removes the
/// module's units of ports no longer bound, reloads systemd only when a unit changed, (re)starts the sockets.
/// Without systemd (<c>/run/systemd/system</c> absent, the test of sd_booted), it keeps one
/// <c>socat TCP4-LISTEN:PORT,bind=127.0.0.1,fork EXEC:'qrexec-client-vm @default qubes.ConnectTCP+PORT'</c>
/// per port, as qvm-connect-tcp does but on 127.0.0.1 only, with pid files in
/// <c>/run/qubesfirewall/connect-tcp</c>. Running it again changes nothing (a listener already running with the
/// same command keeps running); the user's own units and processes are never touched.</para>
/// <para>Every value in these texts is a validated qube name or a port number, and is checked once more here.</para>
/// </summary>
public static class ConnectTcpUnits
{
    public const string UnitDirectory = "/run/systemd/system";
    public const string FallbackDirectory = "/run/qubesfirewall/connect-tcp";
    public const string QrexecClientVm = "/usr/bin/qrexec-client-vm";
    public const string HeredocDelimiter = "QUBESFW_UNIT";

    public static string SocketUnit(TcpBinding b)
    {
        Check(b);
        var local = b.LocalPort.ToString(CultureInfo.InvariantCulture);
        var port = b.Port.ToString(CultureInfo.InvariantCulture);
        var sb = new StringBuilder(512);
        sb.Append("# QubesFirewall: qubes.ConnectTCP binding of ").Append(b.From).Append(", generated in dom0 from its feature\n");
        sb.Append("# ").Append(b.FeatureName).Append(" (Add-QubeTcpBinding -Permanent): do not edit.\n");
        sb.Append("[Unit]\n");
        sb.Append("Description=QubesFirewall: 127.0.0.1:").Append(local).Append(" to port ").Append(port).Append(" of ").Append(b.To).Append(" (qubes.ConnectTCP)\n");
        sb.Append('\n');
        sb.Append("[Socket]\n");
        sb.Append("ListenStream=127.0.0.1:").Append(local).Append('\n');
        sb.Append("Accept=true\n");
        return sb.ToString();
    }

    public static string ServiceUnit(TcpBinding b)
    {
        Check(b);
        var local = b.LocalPort.ToString(CultureInfo.InvariantCulture);
        var sb = new StringBuilder(512);
        sb.Append("# QubesFirewall: one connection to 127.0.0.1:").Append(local).Append(" of ").Append(b.From)
          .Append(", passed to qrexec; the dom0 policy sends @default to ").Append(b.To).Append(".\n");
        sb.Append("# Generated in dom0 from the feature ").Append(b.FeatureName).Append(": do not edit.\n");
        sb.Append("[Unit]\n");
        sb.Append("Description=QubesFirewall: ").Append(b.Call).Append(" for connection %i to 127.0.0.1:").Append(local).Append('\n');
        sb.Append("CollectMode=inactive-or-failed\n");
        sb.Append('\n');
        sb.Append("[Service]\n");
        sb.Append("ExecStart=").Append(QrexecClientVm).Append(" @default ").Append(b.Call).Append('\n');
        sb.Append("StandardInput=socket\n");
        sb.Append("StandardOutput=socket\n");
        sb.Append("StandardError=journal\n");
        return sb.ToString();
    }

    /// <summary>
    /// The script for one client (shell, runs as root in it): its permanent bindings, each with its own local
    /// port; an empty list gives the script that removes every listener the module started there.
    /// It runs in a subshell and ends with its status, so in rc.local a failure never stops the lines after it.
    /// </summary>
    public static string Render(string client, IReadOnlyList<TcpBinding> bindings)
    {
        Validation.QubeName.Validate(client);
        var list = bindings.OrderBy(b => b.LocalPort).ToList();
        foreach (var b in list)
        {
            Check(b);
            if (b.From != client || !b.Permanent)
                throw new ArgumentException($"{b.Text} is not a permanent binding of {client}");
        }
        var dup = list.GroupBy(b => b.LocalPort).FirstOrDefault(g => g.Count() > 1);
        if (dup is not null)
            throw new QubesFirewallException(ErrorIds.LocalPortInUse, FailureKind.InvalidOperation,
                $"'{client}' has two permanent bindings on local port {dup.Key.ToString(CultureInfo.InvariantCulture)}: {string.Join(", ", dup.Select(b => b.Text))}.", client);

        var want = " " + string.Concat(list.Select(b => b.LocalPort.ToString(CultureInfo.InvariantCulture) + " "));
        var sb = new StringBuilder(2048 + list.Count * 1024);
        sb.Append("# QubesFirewall qubes.ConnectTCP bindings ").Append(list.Count == 0 ? "removed from " : "of ").Append(client)
          .Append(", generated in dom0 from its qubesfirewall.tcp.* features.\n");
        sb.Append("# Add-QubeTcpBinding and Remove-QubeTcpBinding rewrite it: do not edit.\n");
        foreach (var b in list)
            sb.Append("#   127.0.0.1:").Append(b.LocalPort.ToString(CultureInfo.InvariantCulture)).Append(" -> ").Append(b.Call)
              .Append(" (@default, which the dom0 policy sends to ").Append(b.To).Append(")\n");
        if (list.Count == 0) sb.Append("#   (none left: this removes the listeners the module started)\n");
        sb.Append("# With systemd: socket units in ").Append(UnitDirectory).Append(" (").Append(TcpBinding.UnitPrefix).Append("PORT.socket and @.service);\n");
        sb.Append("# without: one socat listener per port (pid files in ").Append(FallbackDirectory).Append(").\n");
        sb.Append("# Running it again changes nothing; listeners of ports no longer bound are stopped.\n");
        sb.Append("(\n");
        sb.Append("  set +e\n");
        sb.Append("  qfw_want=").Append(ShellQuote.Single(want)).Append('\n');
        sb.Append("  qfw_rc=0\n");
        sb.Append("  if [ -d /run/systemd/system ]; then\n");
        sb.Append("    qfw_dir=").Append(UnitDirectory).Append('\n');
        sb.Append("    qfw_changed=' '\n");
        sb.Append("    qfw_unit() {\n");
        sb.Append("      # $1: unit file name; its text on standard input. Replaced only when it differs.\n");
        sb.Append("      cat > \"$qfw_dir/.$1.qfw-new\" || return 1\n");
        sb.Append("      if cmp -s \"$qfw_dir/.$1.qfw-new\" \"$qfw_dir/$1\"; then\n");
        sb.Append("        rm -f \"$qfw_dir/.$1.qfw-new\"\n");
        sb.Append("      else\n");
        sb.Append("        mv -f \"$qfw_dir/.$1.qfw-new\" \"$qfw_dir/$1\" && qfw_changed=\"$qfw_changed$1 \"\n");
        sb.Append("      fi\n");
        sb.Append("    }\n");
        sb.Append("    for qfw_f in \"$qfw_dir\"/").Append(TcpBinding.UnitPrefix).Append("*.socket; do\n");
        sb.Append("      [ -e \"$qfw_f\" ] || continue\n");
        sb.Append("      qfw_p=${qfw_f##*/").Append(TcpBinding.UnitPrefix).Append("}; qfw_p=${qfw_p%.socket}\n");
        sb.Append("      case \"$qfw_want\" in *\" $qfw_p \"*) continue ;; esac\n");
        sb.Append("      systemctl stop \"").Append(TcpBinding.UnitPrefix).Append("$qfw_p.socket\"\n");
        sb.Append("      rm -f \"$qfw_f\" \"$qfw_dir/").Append(TcpBinding.UnitPrefix).Append("$qfw_p@.service\" || qfw_rc=1\n");
        sb.Append("      qfw_changed=\"$qfw_changed-$qfw_p \"\n");
        sb.Append("    done\n");
        foreach (var b in list)
        {
            AppendUnit(sb, TcpBinding.SocketUnitName(b.LocalPort), SocketUnit(b));
            AppendUnit(sb, TcpBinding.ServiceUnitName(b.LocalPort), ServiceUnit(b));
        }
        sb.Append("    if [ \"$qfw_changed\" != ' ' ]; then systemctl daemon-reload || qfw_rc=1; fi\n");
        sb.Append("    for qfw_p in $qfw_want; do\n");
        sb.Append("      case \"$qfw_changed\" in\n");
        sb.Append("        *\" ").Append(TcpBinding.UnitPrefix).Append("$qfw_p.socket \"*|*\" ").Append(TcpBinding.UnitPrefix).Append("$qfw_p@.service \"*) qfw_how=restart ;;\n");
        sb.Append("        *) qfw_how=start ;;\n");
        sb.Append("      esac\n");
        sb.Append("      systemctl \"$qfw_how\" \"").Append(TcpBinding.UnitPrefix).Append("$qfw_p.socket\" || qfw_rc=1\n");
        sb.Append("    done\n");
        sb.Append("  else\n");
        sb.Append("    qfw_run=").Append(FallbackDirectory).Append('\n');
        sb.Append("    mkdir -p \"$qfw_run\" || exit 1\n");
        sb.Append("    qfw_stop() {\n");
        sb.Append("      # $1: local port. Stops the listener of its pid file, if that process is still ours.\n");
        sb.Append("      if [ -f \"$qfw_run/$1.pid\" ]; then\n");
        sb.Append("        read -r qfw_pid < \"$qfw_run/$1.pid\"\n");
        sb.Append("        case \"$qfw_pid\" in\n");
        sb.Append("          ''|*[!0-9]*) ;;\n");
        sb.Append("          *) if tr '\\0' ' ' < \"/proc/$qfw_pid/cmdline\" 2>/dev/null | grep -q 'qubes\\.ConnectTCP'; then kill \"$qfw_pid\"; fi ;;\n");
        sb.Append("        esac\n");
        sb.Append("      fi\n");
        sb.Append("      rm -f \"$qfw_run/$1.pid\" \"$qfw_run/$1.cmd\"\n");
        sb.Append("    }\n");
        sb.Append("    qfw_listen() {\n");
        sb.Append("      # $1: local port, $2: the qrexec call. Leaves a listener running with the same call alone.\n");
        sb.Append("      qfw_cmd=\"qrexec-client-vm @default $2\"\n");
        sb.Append("      if [ -f \"$qfw_run/$1.pid\" ] && [ \"$(cat \"$qfw_run/$1.cmd\" 2>/dev/null)\" = \"$qfw_cmd\" ]; then\n");
        sb.Append("        read -r qfw_pid < \"$qfw_run/$1.pid\"\n");
        sb.Append("        if [ -n \"$qfw_pid\" ] && kill -0 \"$qfw_pid\" 2>/dev/null; then return 0; fi\n");
        sb.Append("      fi\n");
        sb.Append("      qfw_stop \"$1\"\n");
        sb.Append("      if ! command -v socat >/dev/null 2>&1; then\n");
        sb.Append("        echo \"qubesfirewall: no systemd and no socat here: nothing listens on 127.0.0.1:$1\" >&2\n");
        sb.Append("        return 1\n");
        sb.Append("      fi\n");
        sb.Append("      socat \"TCP4-LISTEN:$1,bind=127.0.0.1,reuseaddr,fork\" \"EXEC:$qfw_cmd\" </dev/null >/dev/null 2>&1 &\n");
        sb.Append("      qfw_pid=$!\n");
        sb.Append("      printf '%s\\n' \"$qfw_pid\" > \"$qfw_run/$1.pid\"\n");
        sb.Append("      printf '%s\\n' \"$qfw_cmd\" > \"$qfw_run/$1.cmd\"\n");
        sb.Append("      # wait until it listens (a port already taken makes socat exit at once)\n");
        sb.Append("      qfw_hex=$(printf '0100007F:%04X' \"$1\")\n");
        sb.Append("      qfw_i=0\n");
        sb.Append("      while [ \"$qfw_i\" -lt 50 ]; do\n");
        sb.Append("        if ! kill -0 \"$qfw_pid\" 2>/dev/null; then\n");
        sb.Append("          rm -f \"$qfw_run/$1.pid\" \"$qfw_run/$1.cmd\"\n");
        sb.Append("          echo \"qubesfirewall: socat could not listen on 127.0.0.1:$1 (port in use?)\" >&2\n");
        sb.Append("          return 1\n");
        sb.Append("        fi\n");
        sb.Append("        if grep -q \" $qfw_hex 00000000:0000 0A \" /proc/net/tcp 2>/dev/null; then return 0; fi\n");
        sb.Append("        sleep 0.1\n");
        sb.Append("        qfw_i=$((qfw_i + 1))\n");
        sb.Append("      done\n");
        sb.Append("      return 0\n");
        sb.Append("    }\n");
        sb.Append("    for qfw_f in \"$qfw_run\"/*.pid; do\n");
        sb.Append("      [ -e \"$qfw_f\" ] || continue\n");
        sb.Append("      qfw_p=${qfw_f##*/}; qfw_p=${qfw_p%.pid}\n");
        sb.Append("      case \"$qfw_want\" in *\" $qfw_p \"*) ;; *) qfw_stop \"$qfw_p\" ;; esac\n");
        sb.Append("    done\n");
        foreach (var b in list)
            sb.Append("    qfw_listen ").Append(b.LocalPort.ToString(CultureInfo.InvariantCulture)).Append(' ').Append(ShellQuote.Single(b.Call)).Append(" || qfw_rc=1\n");
        sb.Append("  fi\n");
        sb.Append("  exit \"$qfw_rc\"\n");
        sb.Append(")\n");
        return sb.ToString();
    }

    private static void AppendUnit(StringBuilder sb, string name, string text)
    {
        sb.Append("    qfw_unit ").Append(ShellQuote.Single(name)).Append(" <<'").Append(HeredocDelimiter).Append("' || qfw_rc=1\n");
        sb.Append(text);
        sb.Append(HeredocDelimiter).Append('\n');
    }

    // The last guard before text reaches a unit file or the shell: names and numbers only.
    private static void Check(TcpBinding b)
    {
        foreach (var name in new[] { b.From, b.To })
            if (!Validation.QubeName.IsValid(name))
                throw QubesFirewallException.Invalid(ErrorIds.InvalidQubeName, Validation.QubeName.Problem(name)!, name);
        TcpBinding.ValidatePort(b.Port, "Port");
        TcpBinding.ValidatePort(b.LocalPort, "LocalPort");
    }
}
