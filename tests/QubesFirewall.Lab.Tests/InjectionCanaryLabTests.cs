using System.Diagnostics;
using QubesFirewall.Engine;
using QubesFirewall.Engine.Model;
using QubesFirewall.Engine.Planning;
using QubesFirewall.Lab.Tests.Lab;
using Xunit.Abstractions;

namespace QubesFirewall.Lab.Tests;

/// <summary>
/// The injection canary. 1: every value that reaches a generated script (the target qube, the allowed
/// sources, the interface, the comment of a port forward, a forward declaration edited by hand in
/// qubes.xml, the two qubes of a qubes.ConnectTCP binding) is tried with <c>$(touch CANARY)</c>, backtick, <c>;</c>, <c>|</c>, <c>&amp;&amp;</c>, newline and
/// quote payloads before, inside and after a valid value: each is refused at input, unless every
/// character of it is in the grammar (a comment may say "; touch /tmp/x"). 2: forwards carrying the
/// accepted ones, and hostile but valid interface names and comments, are applied to the lab: their
/// scripts run with bash in the qubes' namespaces, again and again, and from the persisted hook files at a
/// "reboot". The canary file never appears, while a control command run the same way does create its own.
/// </summary>
[Collection(LabCollection.Name)]
public sealed class InjectionCanaryLabTests : IDisposable
{
    private readonly LabTopology _lab;
    private readonly ITestOutputHelper _output;
    private readonly PortForwardLab _pf;
    private readonly string _canary = Path.Combine(Path.GetTempPath(), "qfw-canary-" + Guid.NewGuid().ToString("N")[..12]);
    private readonly Stopwatch _clock = Stopwatch.StartNew();

    public InjectionCanaryLabTests(LabTopology lab, ITestOutputHelper output)
    {
        _lab = lab;
        _output = output;
        _lab.Reset();
        _pf = new PortForwardLab(lab);
    }

    public void Dispose()
    {
        _pf.Dispose();
        foreach (var f in Directory.GetFiles(Path.GetTempPath(), Path.GetFileName(_canary) + "*")) File.Delete(f);
    }

    private IEnumerable<string> Payloads(string canary) =>
    [
        $"$(touch {canary})",
        $"`touch {canary}`",
        $"; touch {canary}",
        $";touch {canary};",
        $"| touch {canary}",
        $"&& touch {canary}",
        $"\ntouch {canary}\n",
        $"'; touch {canary}; '",
        $"\"; touch {canary}; \"",
        $"$IFS;touch${{IFS}}{canary}",
        $"\\\"; touch {canary} #",
        $"\" ; touch {canary} ; \"",
    ];

    private static IEnumerable<string> Around(string valid, string payload) =>
        [payload, valid + payload, payload + valid, valid[..(valid.Length / 2)] + payload + valid[(valid.Length / 2)..]];

    /// <summary>Everything that is left anywhere the scripts could have written a canary.</summary>
    private List<string> CanariesFound(string name) =>
        Directory.GetFiles(Path.GetTempPath(), name + "*")
            .Concat(Directory.EnumerateFiles(_lab.WorkDir, name + "*", SearchOption.AllDirectories))
            .ToList();

    [Fact]
    public void Payloads_are_refused_at_input_and_generated_scripts_run_in_the_lab_never_execute_them()
    {
        var name = Path.GetFileName(_canary);
        var accepted = new List<(string Parameter, string Value)>();
        int tried = 0, refused = 0;

        // 1. At input: every parameter of a port forward that reaches a script.
        void Try(string parameter, string value, Action create)
        {
            tried++;
            try
            {
                create();
            }
            catch (QubesFirewallException ex)
            {
                refused++;
                Assert.DoesNotContain('\n', ex.Message);
                return;
            }
            // accepted: then every character of it is in the parameter's grammar (none of $ ` | & ' " newline)
            Assert.DoesNotContain(value, c => c is '$' or '`' or '|' or '&' or '\'' or '"' or '\n' or '\\' or '(' or ')');
            accepted.Add((parameter, value));
        }
        foreach (var payload in Payloads(_canary))
        {
            foreach (var v in Around("work", payload)) Try("VMName", v, () => PortForward.Create(v, ForwardProtocol.Tcp, 8080));
            foreach (var v in Around("192.168.1.0/24", payload)) Try("AllowFrom", v, () => PortForward.Create("work", ForwardProtocol.Tcp, 8080, allowFrom: [v]));
            foreach (var v in Around("ens6", payload)) Try("Interface", v, () => PortForward.Create("work", ForwardProtocol.Tcp, 8080, @interface: v));
            foreach (var v in Around("web server", payload)) Try("Comment", v, () => PortForward.Create("work", ForwardProtocol.Tcp, 8080, comment: v));
            foreach (var v in Around("tcp.8080", payload)) Try("feature name", v, () => PortForwardFeature.Parse("work", "qubesfirewall.forward." + v, "target=8080 type=external"));
            foreach (var v in Around("target=8080 type=external", payload)) Try("feature value", v, () => PortForwardFeature.Parse("work", "qubesfirewall.forward.tcp.8080", v));
            // qubes.ConnectTCP bindings: names that go into unit files, the client's script and the dom0 policy
            foreach (var v in Around("work", payload)) Try("TcpBinding From", v, () => TcpBinding.Create(v, "personal", 22, permanent: true));
            foreach (var v in Around("personal", payload)) Try("TcpBinding To", v, () => TcpBinding.Create("work", v, 22, permanent: true));
        }
        Assert.All(accepted, a => Assert.Contains(a.Parameter, new[] { "Comment", "feature value" }));

        // 2. In the lab: forwards with the accepted values and hostile but valid names, plus a hand-edited
        //    declaration with a payload (never rendered), applied; every script runs in the namespaces.
        using var work = _lab.StartServer("work", 8080);
        _pf.Backend.SetFeature("personal", "qubesfirewall.forward.tcp.9999", $"target=9999 type=external comment=$(touch {_canary}-feature)");
        var comments = accepted.Where(a => a.Parameter == "Comment").Select(a => a.Value.Trim()).Where(c => c.Length is > 0 and <= PortForward.MaxCommentLength && c == c.Trim()).Distinct().ToList();
        comments.Add($"x [a] :b, c.d/e-f_g; touch {_canary}; ls /");
        var port = 8100;
        var forwards = 0;
        foreach (var comment in comments.Take(12))
        {
            _pf.Add(PortForward.Create("work", ForwardProtocol.Tcp, port++, 8080, allowFrom: ["192.168.1.0/24"], comment: comment));
            forwards++;
        }
        _pf.Add(PortForward.Create("personal", ForwardProtocol.Udp, 5353, @interface: "ens6-x.1_y", comment: $"udp; touch {_canary}"));
        _pf.Add(PortForward.Create("untrusted", ForwardProtocol.Tcp, 2222, type: ForwardType.Internal, comment: $"internal; touch {_canary} [x]"));
        forwards += 2;
        Assert.Equal("work", _lab.Connect("outside", "192.168.1.10", 8100).ServerNode); // the scripts really ran

        // every qube restarted from nothing five times (its agent applies its keys again each time), then once more at a "reboot"
        var qubes = new[] { "sys-net", "sys-firewall", "sys-vpn", "work", "personal", "untrusted", "vpn-app" };
        // the hostile text is really in what runs (on comment lines), not filtered away
        Assert.Contains($"; touch {_canary}", _pf.Export("sys-net"), StringComparison.Ordinal);
        var runs = _pf.Ran.Count;
        foreach (var qube in qubes)
        {
            var script = _pf.Export(qube);
            if (script is null) continue;
            Assert.DoesNotContain("$(touch", script, StringComparison.Ordinal);
            for (var i = 0; i < 5; i++)
            {
                var again = _pf.Restart(qube);
                Assert.All(again, h => h.EnsureSuccess($"re-apply {i + 1} in {qube}"));
                runs += again.Count;
            }
        }
        foreach (var qube in qubes)
        {
            var hooks = _pf.Restart(qube);
            Assert.All(hooks, h => h.EnsureSuccess($"hook in {qube}"));
            runs += hooks.Count;
        }

        Assert.Empty(CanariesFound(name));

        // control: the same way of running, given a command that does create a file, creates it
        var control = _canary + "-control";
        _pf.RunScript("work", $"touch {control}\n").EnsureSuccess("control");
        Assert.True(File.Exists(control), "the control command did not create its file: the canary check would prove nothing");
        File.Delete(control);

        _output.WriteLine($"inputs tried at input: {tried} ({refused} refused, {accepted.Count} accepted, all comments or forward declarations whose every character is in the grammar)");
        _output.WriteLine($"lab: {forwards} forwards with hostile comments and names plus one hand-edited declaration with a payload; {runs} script executions in the namespaces (apply, 5 re-runs per qube, reboots); canary files: 0");
        _output.WriteLine($"test took {_clock.ElapsedMilliseconds} ms");
    }
}
