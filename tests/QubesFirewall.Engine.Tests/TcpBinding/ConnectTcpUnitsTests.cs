using System.Diagnostics;
using System.Text.RegularExpressions;
using QubesFirewall.Engine.Scripts;
using QubesFirewall.Tests.Shared;

namespace QubesFirewall.Engine.Tests.ConnectTcp;

/// <summary>The client's unit files, parsed as INI (sections and keys), and the script that installs them.</summary>
[System.Runtime.Versioning.UnsupportedOSPlatform("windows")]
public sealed class ConnectTcpUnitsTests
{
    private static readonly Model.TcpBinding Main = Model.TcpBinding.Create("untrusted", "mytcp-service", 444, 10444, permanent: true);

    [Fact]
    public void The_socket_listens_on_loopback_only_and_accepts_each_connection()
    {
        var unit = UnitFile.Parse(ConnectTcpUnits.SocketUnit(Main));
        Assert.Equal(["Unit", "Socket"], unit.Select(e => e.Section).Distinct());
        Assert.Equal("127.0.0.1:10444", UnitFile.Single(unit, "Socket", "ListenStream"));
        Assert.Contains(UnitFile.Single(unit, "Socket", "Accept"), new[] { "true", "yes", "1", "on" });
        Assert.Single(unit, e => e.Section == "Socket" && e.Key.StartsWith("Listen", StringComparison.Ordinal));
        Assert.Contains("mytcp-service", UnitFile.Single(unit, "Unit", "Description"));
        Assert.Equal("qubesfirewall-tcp-10444.socket", Model.TcpBinding.SocketUnitName(10444));
    }

    [Fact]
    public void The_service_template_runs_qrexec_client_vm_on_the_connection()
    {
        var unit = UnitFile.Parse(ConnectTcpUnits.ServiceUnit(Main));
        var exec = UnitFile.Single(unit, "Service", "ExecStart").Split(' ', StringSplitOptions.RemoveEmptyEntries);
        Assert.Equal(["/usr/bin/qrexec-client-vm", "@default", "qubes.ConnectTCP+444"], exec);
        Assert.Equal("socket", UnitFile.Single(unit, "Service", "StandardInput"));
        Assert.Equal("socket", UnitFile.Single(unit, "Service", "StandardOutput"));
        Assert.Contains("%i", UnitFile.Single(unit, "Unit", "Description"));
        // a socket with Accept=true needs a template service of the same name, with "@"
        Assert.Equal(Model.TcpBinding.SocketUnitName(10444)[..^".socket".Length] + "@.service", Model.TcpBinding.ServiceUnitName(10444));
    }

    [Fact]
    public void The_script_writes_exactly_the_generated_units()
    {
        var other = Model.TcpBinding.Create("untrusted", "work", 22, 2222, permanent: true);
        var script = ConnectTcpUnits.Render("untrusted", [Main, other]);
        var units = Heredocs(script);
        Assert.Equal(["qubesfirewall-tcp-2222.socket", "qubesfirewall-tcp-2222@.service", "qubesfirewall-tcp-10444.socket", "qubesfirewall-tcp-10444@.service"], units.Keys);
        Assert.Equal(ConnectTcpUnits.SocketUnit(Main), units["qubesfirewall-tcp-10444.socket"]);
        Assert.Equal(ConnectTcpUnits.ServiceUnit(other), units["qubesfirewall-tcp-2222@.service"]);
        foreach (var text in units.Values) UnitFile.Parse(text);
        Assert.Contains("qfw_want=' 2222 10444 '", script);
        Assert.Contains("qfw_listen 10444 'qubes.ConnectTCP+444' || qfw_rc=1", script);
        Assert.Contains("qfw_listen 2222 'qubes.ConnectTCP+22' || qfw_rc=1", script);
    }

    [Fact]
    public void With_nothing_left_the_script_only_cleans_up()
    {
        var script = ConnectTcpUnits.Render("untrusted", []);
        Assert.Empty(Heredocs(script));
        Assert.Contains("qfw_want=' '", script);
        Assert.DoesNotContain("qfw_listen 1", script);
    }

    [Theory]
    [InlineData("sh")]
    [InlineData("bash")]
    public void The_script_is_valid_shell(string shell)
    {
        foreach (var script in new[] { ConnectTcpUnits.Render("untrusted", [Main]), ConnectTcpUnits.Render("untrusted", []) })
        {
            var psi = new ProcessStartInfo(shell, ["-n"]) { RedirectStandardInput = true, RedirectStandardError = true };
            using var p = Process.Start(psi)!;
            p.StandardInput.Write(script);
            p.StandardInput.Close();
            var err = p.StandardError.ReadToEnd();
            p.WaitForExit();
            Assert.True(p.ExitCode == 0, err);
        }
    }

    [Fact]
    public void Only_the_client_s_own_permanent_bindings_with_distinct_ports_are_accepted()
    {
        Assert.Throws<ArgumentException>(() => ConnectTcpUnits.Render("work", [Main]));
        Assert.Throws<ArgumentException>(() => ConnectTcpUnits.Render("untrusted", [Model.TcpBinding.Create("untrusted", "work", 22)]));
        var clash = Model.TcpBinding.Create("untrusted", "work", 22, 10444, true);
        Assert.Equal("LocalPortInUse", Assert.Throws<QubesFirewallException>(() => ConnectTcpUnits.Render("untrusted", [Main, clash])).ErrorId);
        // a record made behind the validation's back is still stopped before it reaches a file
        var forged = Main with { To = "x'; reboot; '" };
        Assert.Equal("InvalidQubeName", Assert.Throws<QubesFirewallException>(() => ConnectTcpUnits.SocketUnit(forged)).ErrorId);
    }

    /// <summary>The unit files a script writes: <c>qfw_unit 'NAME' &lt;&lt;'QUBESFW_UNIT'</c> ... <c>QUBESFW_UNIT</c>.</summary>
    internal static Dictionary<string, string> Heredocs(string script)
    {
        var result = new Dictionary<string, string>(StringComparer.Ordinal);
        var lines = script.Split('\n');
        for (var i = 0; i < lines.Length; i++)
        {
            var m = Regex.Match(lines[i], @"^\s*qfw_unit '([^']+)' <<'QUBESFW_UNIT'");
            if (!m.Success) continue;
            var body = new List<string>();
            for (i++; lines[i] != "QUBESFW_UNIT"; i++) body.Add(lines[i]);
            result[m.Groups[1].Value] = string.Join("\n", body) + "\n";
        }
        return result;
    }
}
