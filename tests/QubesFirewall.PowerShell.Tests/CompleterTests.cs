using System.Collections;
using System.Management.Automation;

namespace QubesFirewall.PowerShell.Tests;

/// <summary>
/// The argument completers read from the backend named by -Root (through one CompletionSource): what each offers
/// on a copy of the sample root with a forward and a binding declared, and nothing, never an error, when the root
/// cannot be opened.
/// </summary>
public sealed class CompleterTests : IDisposable
{
    private readonly SampleRootCopy _root = new();

    public void Dispose() => _root.Dispose();

    private Hashtable Bound(params (string Name, object Value)[] more)
    {
        var bound = new Hashtable(StringComparer.OrdinalIgnoreCase) { ["Root"] = _root.Path };
        foreach (var (name, value) in more) bound[name] = value;
        return bound;
    }

    private static List<string> Texts(IEnumerable<CompletionResult> results) => results.Select(r => r.CompletionText).ToList();

    [Fact]
    public void Qube_names_and_network_qubes_come_from_the_root()
    {
        Assert.Equal(["sys-firewall", "sys-net", "sys-usb", "sys-whonix"], Texts(new QubeNameCompleter().CompleteArgument("Get-Qube", "VMName", "sys-", null!, Bound())));
        var netVms = Texts(new NetworkQubeCompleter().CompleteArgument("Get-Qube", "NetVM", "", null!, Bound()));
        Assert.Contains("sys-firewall", netVms);
        Assert.DoesNotContain("work", netVms);
    }

    [Fact]
    public void Rule_numbers_forward_ports_and_bindings_come_from_what_is_declared()
    {
        PowerShellHost.Run("Add-QubePortForward -VMName work -Port 443 -AllowFrom 192.168.1.0/24; Add-QubeTcpBinding -From untrusted -To work -Port 444", _root.Path).AssertNoErrors();
        var rules = new RuleNumberCompleter().CompleteArgument("Remove-QubeFirewallRule", "Number", "", null!, Bound(("VMName", "work"))).ToList();
        Assert.NotEmpty(rules);
        Assert.Equal(Enumerable.Range(0, rules.Count).Select(i => i.ToString(System.Globalization.CultureInfo.InvariantCulture)), Texts(rules));
        Assert.Equal(["443"], Texts(new PortForwardPortCompleter().CompleteArgument("Remove-QubePortForward", "Port", "4", null!, Bound(("VMName", "work")))));
        Assert.Empty(new PortForwardPortCompleter().CompleteArgument("Remove-QubePortForward", "Port", "", null!, Bound(("VMName", "personal"))));
        Assert.Equal(["work"], Texts(new TcpBindingCompleter().CompleteArgument("Remove-QubeTcpBinding", "To", "", null!, Bound(("From", "untrusted")))));
        Assert.Equal(["444"], Texts(new TcpBindingCompleter().CompleteArgument("Remove-QubeTcpBinding", "Port", "", null!, Bound(("From", "untrusted"), ("To", "work")))));
    }

    [Fact]
    public void A_root_that_cannot_be_opened_gives_nothing()
    {
        var bound = new Hashtable(StringComparer.OrdinalIgnoreCase) { ["Root"] = Path.Combine(_root.Path, "no-such-root") };
        Assert.Empty(new QubeNameCompleter().CompleteArgument("Get-Qube", "VMName", "", null!, bound));
        Assert.Empty(new NetworkQubeCompleter().CompleteArgument("Get-Qube", "NetVM", "", null!, bound));
        Assert.Empty(new TcpBindingCompleter().CompleteArgument("Remove-QubeTcpBinding", "To", "", null!, bound));
    }
}
