using QubesFirewall.Engine.Model;
using QubesFirewall.Engine.Planning;
using QubesFirewall.Tests.Shared;

namespace QubesFirewall.PowerShell.Tests;

/// <summary>A clone of a qube with each kind of declaration, through the listing cmdlets and Test-QubeFirewall.</summary>
public sealed class CopiedDeclarationCmdletTests : IDisposable
{
    private readonly SampleRootCopy _root = new();

    public void Dispose() => _root.Dispose();

    private PsRun Run(string script) => PowerShellHost.Run(script, _root.Path);

    private void Clone(string source, string clone, int qid) => QubeCloner.Clone(_root.Path, source, clone, qid);

    [Fact]
    public void A_clone_with_each_kind_of_declaration_shows_them_copied_with_a_Problem()
    {
        Run("Add-QubePortForward -VMName work -Port 443 -AllowFrom 192.168.1.0/24; " +
            "Add-QubeTcpBinding -From work -To personal -Port 22 -LocalPort 2222; " +
            "Enable-QubeInterVmNetwork -From work -To personal -Protocol Tcp -Port 5432").AssertNoErrors();
        Clone("work", "work-clone", 90);

        var forwards = Run("Get-QubePortForward -VMName work-clone");
        var forward = Assert.Single(forwards.Of<QubePortForward>());
        Assert.Equal((443, DeclarationOwnership.Copied), (forward.Port, forward.Ownership));
        Assert.Contains("copied from another qube", forward.Problem);
        Assert.Contains(forwards.Warnings, w => w.Contains("never deployed", StringComparison.Ordinal));

        var binding = Assert.Single(Run("Get-QubeTcpBinding -From work-clone").Of<QubeTcpBinding>());
        Assert.Equal((22, DeclarationOwnership.Copied), (binding.Port!.Value, binding.Ownership));
        Assert.Contains("Remove-QubeTcpBinding -From work-clone -To personal -Port 22", binding.Problem);

        var link = Assert.Single(Run("Get-QubeInterVmNetwork -From work-clone").Of<QubeInterVmLink>());
        Assert.Equal(DeclarationOwnership.Copied, link.Ownership);
        Assert.Contains("Disable-QubeInterVmNetwork -From work-clone -To personal", link.Problem);

        // the originals are untouched and bound
        Assert.All(Run("Get-QubePortForward -VMName work").Of<QubePortForward>(), f => Assert.Equal(DeclarationOwnership.Bound, f.Ownership));

        var audit = Run("Test-QubeFirewall -VMName work-clone").Of<AuditFinding>().Where(f => f.Check == DeclarationOwnershipCheck.Copied).ToList();
        Assert.Equal(3, audit.Count);
        Assert.All(audit, f => Assert.Contains("; or remove the feature: ", f.Fix));

        // removing the copies is never refused, and the originals stay
        Run("Remove-QubePortForward -VMName work-clone -Port 443 -Confirm:$false; Remove-QubeTcpBinding -From work-clone -To personal -Port 22 -Confirm:$false; " +
            "Disable-QubeInterVmNetwork -From work-clone -To personal -Protocol Tcp -Port 5432 -Confirm:$false").AssertNoErrors();
        Assert.Empty(Run("Get-QubePortForward -VMName work-clone").Output);
        Assert.Single(Run("Get-QubePortForward -VMName work").Output);
    }
}
