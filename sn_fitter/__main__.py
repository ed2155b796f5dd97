from sn_fitter.app import main

main()
