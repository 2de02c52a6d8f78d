using QubesFirewall.Engine.Agent;
using QubesFirewall.Engine.Backends;
using QubesFirewall.Engine.Persistence;
using QubesFirewall.Tests.Shared;

namespace QubesFirewall.PowerShell.Tests;

/// <summary>Install-, Test- and Uninstall-QubeFirewallAgent on a copy of the sample root (sys-firewall is a disposable of default-dvm there).</summary>
public sealed class AgentCmdletTests : IDisposable
{
    private readonly SampleRootCopy _root = new();

    public AgentCmdletTests()
    {
        // the sample records the agent as Install-QubeFirewallAgent leaves it: these tests start from a system without it
        using var backend = new OfflineRoot(_root.Path);
        foreach (var qube in backend.GetInventory().Qubes.Where(q => q.Features.ContainsKey(AgentScript.VersionFeature)).Select(q => q.Name).ToList())
            backend.RemoveFeature(qube, AgentScript.VersionFeature);
    }

    public void Dispose() => _root.Dispose();

    private PsRun Run(string script) => PowerShellHost.Run(script, root: _root.Path);

    private string? File(string qube, string path)
    {
        using var backend = new OfflineRoot(_root.Path);
        return backend.ReadQubeFile(qube, path);
    }

    private string? Feature(string qube, string name)
    {
        using var backend = new OfflineRoot(_root.Path);
        return backend.GetInventory().Get(qube).Features.GetValueOrDefault(name);
    }

    [Fact]
    public void Install_writes_the_agent_and_its_hook_where_each_qube_keeps_them_records_the_version_and_again_changes_nothing()
    {
        var before = Run("Test-QubeFirewallAgent -VMName sys-net, sys-firewall, work");
        before.AssertNoErrors();
        Assert.All(before.Of<QubeFirewallAgent>(), a => Assert.Equal(AgentState.Missing, a.State));

        var run = Run("Install-QubeFirewallAgent -VMName sys-net, sys-firewall, work -Force");
        run.AssertNoErrors();
        var results = run.Of<QubeFirewallAgent>().ToDictionary(a => a.VMName);
        Assert.All(results.Values, a => Assert.Equal(AgentState.Installed, a.State));
        Assert.Equal("default-dvm", results["sys-firewall"].StoredIn);
        Assert.Equal(AgentScript.FirewallHookPath, results["sys-net"].HookPath);
        Assert.Equal(AgentScript.FirewallHookPath, results["sys-firewall"].HookPath);
        Assert.Equal(AgentScript.RcLocalHookPath, results["work"].HookPath);

        Assert.Equal(AgentScript.Text, File("sys-net", AgentScript.AgentPath));
        Assert.Equal(AgentScript.Text, File("default-dvm", AgentScript.AgentPath));
        Assert.Equal(AgentScript.HookText(firewallHook: true), File("default-dvm", AgentScript.FirewallHookPath));
        Assert.Equal(AgentScript.HookText(firewallHook: false), File("work", AgentScript.RcLocalHookPath));
        Assert.StartsWith("#!/bin/sh\n", AgentScript.Text, StringComparison.Ordinal);
        foreach (var qube in new[] { "sys-net", "sys-firewall", "work" }) Assert.Equal(AgentScript.Version, Feature(qube, AgentScript.VersionFeature));
        Assert.Null(Feature("default-dvm", AgentScript.VersionFeature));

        var again = Run("Install-QubeFirewallAgent -VMName sys-net, sys-firewall, work -Force");
        again.AssertNoErrors();
        Assert.All(again.Of<QubeFirewallAgent>(), a => Assert.Equal(AgentState.Unchanged, a.State));
        var test = Run("Test-QubeFirewallAgent -VMName sys-net, sys-firewall, work");
        Assert.All(test.Of<QubeFirewallAgent>(), a => Assert.Equal(AgentState.Current, a.State));
    }

    [Fact]
    public void Install_removes_the_managed_block_of_earlier_versions_and_keeps_the_users_lines_byte_for_byte()
    {
        const string head = "#!/bin/sh\r\n# mine\nnft add rule ip qubes custom-input tcp dport 22 accept\n";
        const string tail = "echo 'after the block'  \n\n# end";
        var old = head + ManagedBlock.Render("nft -f - <<'X'\nflush chain ip qubes qubesfw-forward\nX\n") + tail;
        using (var backend = new OfflineRoot(_root.Path)) backend.WriteQubeFile("sys-net", HookFiles.FirewallUserScript, old, ManagedBlock.FileMode);

        var run = Run("Install-QubeFirewallAgent -VMName sys-net");
        run.AssertNoErrors();
        var result = Assert.Single(run.Of<QubeFirewallAgent>());
        Assert.Equal(["sys-net:/rw/config/qubes-firewall-user-script"], result.Migrated);
        Assert.Equal(head + tail, File("sys-net", HookFiles.FirewallUserScript));
    }

    [Fact]
    public void Install_keeps_the_permanent_qubes_ConnectTCP_bindings_of_rc_locals_block_and_removes_only_the_forward_and_link_rules()
    {
        // bindings still live in rc.local's managed block: the migration takes the forwards' and links' rules out, never them
        const string head = "#!/bin/sh\n# mine\n";
        var bindings = ConnectTcpPersistence.BeginMarker + "\nsystemctl start qubesfw-connect-10444.socket\n" + ConnectTcpPersistence.EndMarker + "\n";
        var forwards = "nft -f - <<'X'\nflush chain ip qubes qubesfw-input\nX\n";
        using (var backend = new OfflineRoot(_root.Path))
        {
            backend.WriteQubeFile("work", HookFiles.RcLocal, head + ManagedBlock.Render(forwards + bindings), ManagedBlock.FileMode);
            backend.WriteQubeFile("personal", HookFiles.RcLocal, head + ManagedBlock.Render(bindings), ManagedBlock.FileMode);
        }

        var run = Run("Install-QubeFirewallAgent -VMName work, personal");
        run.AssertNoErrors();
        var results = run.Of<QubeFirewallAgent>().ToList();
        Assert.Equal(["work:/rw/config/rc.local"], results.Single(r => r.VMName == "work").Migrated);
        Assert.Empty(results.Single(r => r.VMName == "personal").Migrated); // a block of bindings only: nothing to migrate
        Assert.Equal(head + ManagedBlock.Render(bindings), File("work", HookFiles.RcLocal));
        Assert.Equal(head + ManagedBlock.Render(bindings), File("personal", HookFiles.RcLocal));
    }

    [Fact]
    public void Custom_persist_is_refused_with_the_reason_and_nothing_is_written()
    {
        using (var backend = new OfflineRoot(_root.Path)) backend.SetFeature("work", "service.custom-persist", "1");
        var run = Run("Install-QubeFirewallAgent -VMName work");
        var error = Assert.Single(run.Errors);
        Assert.StartsWith("CustomPersist,", error.FullyQualifiedErrorId, StringComparison.Ordinal);
        Assert.Contains("qvm-service --disable work custom-persist", error.ToString(), StringComparison.Ordinal);
        Assert.Null(File("work", AgentScript.AgentPath));
        Assert.Null(Feature("work", AgentScript.VersionFeature));
    }

    [Fact]
    public void Uninstall_removes_the_files_and_the_record_and_WhatIf_changes_nothing()
    {
        Run("Install-QubeFirewallAgent -VMName work").AssertNoErrors();
        var snapshot = _root.Snapshot();
        Run("Uninstall-QubeFirewallAgent -VMName work -WhatIf").AssertNoErrors();
        _root.AssertUnchanged(snapshot);

        var run = Run("Uninstall-QubeFirewallAgent -VMName work -Confirm:$false");
        run.AssertNoErrors();
        Assert.Equal(AgentState.Removed, Assert.Single(run.Of<QubeFirewallAgent>()).State);
        Assert.Null(File("work", AgentScript.AgentPath));
        Assert.Null(File("work", AgentScript.RcLocalHookPath));
        Assert.Null(Feature("work", AgentScript.VersionFeature));
        Assert.Equal(AgentState.Missing, Assert.Single(Run("Test-QubeFirewallAgent work").Of<QubeFirewallAgent>()).State);
    }

    [Fact]
    public void Install_and_Uninstall_ask_once_with_their_plan_as_every_other_mutating_cmdlet()
    {
        var install = Run("Install-QubeFirewallAgent -VMName work -Verbose -Confirm:$false");
        install.AssertNoErrors();
        var asked = Assert.Single(install.Verbose, v => v.StartsWith("Install the QubesFirewall agent", StringComparison.Ordinal));
        Assert.Contains($"Install the QubesFirewall agent {AgentScript.Version} in work ({AgentScript.AgentPath}, {AgentScript.RcLocalHookPath}):", asked, StringComparison.Ordinal);
        Assert.Contains($"  1. work: write {AgentScript.AgentPath} (the agent {AgentScript.Version}, mode 0755)", asked, StringComparison.Ordinal);
        Assert.Contains($"  2. work: write {AgentScript.RcLocalHookPath} (the hook that starts the agent)", asked, StringComparison.Ordinal);
        Assert.Contains($"  3. work: start the agent ({AgentScript.AgentPath} hook)", asked, StringComparison.Ordinal);
        Assert.Contains($"  4. work: set feature {AgentScript.VersionFeature} = '{AgentScript.Version}'", asked, StringComparison.Ordinal);
        Assert.Equal(AgentState.Installed, Assert.Single(install.Of<QubeFirewallAgent>()).State);

        var uninstall = Run("Uninstall-QubeFirewallAgent -VMName work -Verbose -Confirm:$false");
        uninstall.AssertNoErrors();
        var question = Assert.Single(uninstall.Verbose, v => v.StartsWith("Uninstall the QubesFirewall agent", StringComparison.Ordinal));
        Assert.Contains("Uninstall the QubesFirewall agent from work:", question, StringComparison.Ordinal);
        Assert.Contains("  1. work: stop the agent", question, StringComparison.Ordinal);
        Assert.Contains($"  2. work: delete {AgentScript.RcLocalHookPath}", question, StringComparison.Ordinal);
        Assert.Contains($"  3. work: delete {AgentScript.AgentPath}", question, StringComparison.Ordinal);
        Assert.Contains($"  4. work: remove feature {AgentScript.VersionFeature} (was '{AgentScript.Version}')", question, StringComparison.Ordinal);
        Assert.Equal(AgentState.Removed, Assert.Single(uninstall.Of<QubeFirewallAgent>()).State);
    }
}
